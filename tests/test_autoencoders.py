"""Autoencoders: shapes at the data's sizes, losses against hand computations, training steps on real images,
rebuild round trips, the encoder as a backbone, and the linear autoencoder against PCA."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import DATA

from simsearch.autoencoders import (
    KINDS,
    VAEGAN,
    autoencoder_from_config,
    build_autoencoder,
    encoder_backbone,
    gaussian_noise,
    kl_normal,
    kl_sparsity,
    l1_penalty,
    masking_noise,
)
from simsearch.errors import ModelError

SHAPES = [(1, 28, 28), (1, 105, 105), (3, 64, 64)]
NUM_CLASSES = 10


def build(kind: str, shape: tuple[int, int, int] = (1, 28, 28), code_dim: int = 8, **options):
    return build_autoencoder(kind, shape, code_dim, num_classes=NUM_CLASSES, **options)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these small models gain nothing from more, and the CPU may be shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fashion() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 2,000 Fashion-MNIST test images `(2000, 1, 28, 28)` in [0, 1] and their labels."""
    from simsearch.data import DataNotFoundError, load_fashion_mnist

    try:
        data = load_fashion_mnist("test", root=DATA)
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    images = torch.tensor(data.images[:2000], dtype=torch.float32).div_(255.0).unsqueeze(1)
    return images, torch.tensor(data.labels[:2000])


# ----------------------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reconstructs_images_of_the_data_sizes_and_codes_them(kind: str, shape) -> None:
    torch.manual_seed(0)
    model = build(kind, shape, code_dim=12)
    x = torch.rand(3, *shape)
    y = torch.tensor([0, 4, 9])
    with torch.no_grad():
        out = model(x, y)
    assert out["recon"].shape == (3, *shape)
    assert out["code"].shape == (3, 12)
    assert model.encode(x).shape == (3, 12)
    assert model.decode(torch.randn(3, 12), y).shape == (3, *shape)
    if kind != "linear":
        assert 0.0 <= float(out["recon"].min()) and float(out["recon"].max()) <= 1.0
    if kind in ("vae", "cvae", "vaegan"):
        assert out["mu"].shape == out["logvar"].shape == (3, 12)
        assert torch.equal(out["code"], out["mu"])
    losses = model.loss(x, y)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    assert all(not v.requires_grad for name, v in losses.items() if name != "loss")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_transposed_conv_decoder_also_gives_the_input_size(shape) -> None:
    model = build("conv", shape, decoder="transposed")
    assert model(torch.rand(2, *shape))["recon"].shape == (2, *shape)


@pytest.mark.parametrize("kind", ["vae", "cvae", "vaegan"])
def test_samples_from_the_prior_are_images(kind: str) -> None:
    model = build(kind).eval()
    assert model.sample(5).shape == (5, 1, 28, 28)
    assert model.sample(3, torch.tensor([1, 2, 3])).shape == (3, 1, 28, 28)


def test_the_cvae_decoder_depends_on_the_label() -> None:
    torch.manual_seed(0)
    model = build("cvae").eval()
    z = torch.randn(1, 8).repeat(2, 1)
    images = model.decode(z, torch.tensor([0, 1]))
    assert not torch.allclose(images[0], images[1])


# ----------------------------------------------------------------------------------------------------------------------
# Losses against hand computations
# ----------------------------------------------------------------------------------------------------------------------


def test_kl_of_known_gaussians_matches_a_hand_computation() -> None:
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.5, 0.0]])
    var = torch.tensor([[1.0, 1.0], [1.0, 1.0], [4.0, 0.25]])
    expected = []
    for row_mu, row_var in zip(mu.tolist(), var.tolist(), strict=True):
        # KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - ln v) / 2 per dimension
        expected.append(sum((v + m * m - 1.0 - math.log(v)) / 2.0 for m, v in zip(row_mu, row_var, strict=True)))
    assert expected[0] == 0.0 and expected[1] == pytest.approx(2.5)
    assert kl_normal(mu, var.log()).tolist() == pytest.approx(expected, rel=1e-6)


@torch.no_grad()
def test_the_vae_loss_is_recon_plus_beta_kl_per_pixel() -> None:
    torch.manual_seed(0)
    model = build("vae", beta=3.0).eval()
    x = torch.rand(4, 1, 28, 28)
    losses = model.loss(x)
    assert float(losses["loss"]) == pytest.approx(float(losses["recon"] + 3.0 * losses["kl"] / 784), rel=1e-5)
    out = model(x)
    assert float(losses["kl"]) == pytest.approx(float(kl_normal(out["mu"], out["logvar"]).mean()), rel=1e-6)


def test_l1_penalty_matches_a_hand_computation() -> None:
    code = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, -3.0]])
    assert float(l1_penalty(code)) == pytest.approx(((1 + 2 + 0) + (0.5 + 0.5 + 3)) / 2)


def test_kl_sparsity_matches_a_hand_computation() -> None:
    code = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 0.5]])
    rho = 0.05
    expected = 0.0
    for j in range(3):
        rho_hat = (code[0, j].item() + code[1, j].item()) / 2
        expected += rho * math.log(rho / rho_hat) + (1 - rho) * math.log((1 - rho) / (1 - rho_hat))
    assert float(kl_sparsity(code, rho)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_sparsity(torch.full((4, 3), rho), rho)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("logit", [-15.0, 15.0])
def test_kl_sparsity_pushes_a_unit_saturated_across_the_batch(logit: float) -> None:
    """A unit always off (or always on) in float32 must still get a gradient, of the sign of the exact one."""
    logits = torch.full((8, 2), logit).requires_grad_()
    kl_sparsity(torch.sigmoid(logits), 0.05).backward()
    exact_logits = torch.full((8, 2), logit, dtype=torch.float64).requires_grad_()
    rho_hat = torch.sigmoid(exact_logits).mean(0)
    exact = (0.05 * torch.log(0.05 / rho_hat) + 0.95 * torch.log(0.95 / (1 - rho_hat))).sum()
    exact.backward()
    assert logits.grad is not None and exact_logits.grad is not None
    assert (torch.sign(logits.grad) == torch.sign(exact_logits.grad).float()).all()
    assert (logits.grad.abs() > 0).all()


@pytest.mark.parametrize("sparsity", ["l1", "kl"])
@torch.no_grad()
def test_the_sparse_loss_adds_the_weighted_penalty_of_the_code(sparsity: str) -> None:
    torch.manual_seed(0)
    model = build("sparse", arch="mlp", sparsity=sparsity, weight=0.5).eval()
    x = torch.rand(4, 1, 28, 28)
    code = model.encode(x)
    penalty = l1_penalty(code) if sparsity == "l1" else kl_sparsity(code, 0.05)
    losses = model.loss(x)
    assert float(losses["sparsity"]) == pytest.approx(float(penalty), rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(float(losses["recon"] + 0.5 * penalty), rel=1e-5)
    assert float(code.min()) >= 0.0  # ReLU or sigmoid codes


@torch.no_grad()
def test_bce_reconstruction_is_the_cross_entropy_of_the_output() -> None:
    torch.manual_seed(0)
    model = build("mlp", recon="bce").eval()
    x = torch.rand(4, 1, 28, 28)
    recon = model(x)["recon"]
    expected = -(x * recon.log() + (1 - x) * (1 - recon).log()).mean()
    assert float(model.loss(x)["loss"]) == pytest.approx(float(expected), rel=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Noise
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_masking_noise_drops_the_requested_fraction_of_pixels_in_every_channel(p: float) -> None:
    x = torch.ones(6, 3, 28, 28)
    noisy = masking_noise(x, p)
    dropped = noisy == 0
    assert torch.equal(dropped[:, 0], dropped[:, 1]) and torch.equal(dropped[:, 0], dropped[:, 2])
    assert dropped[:, 0].flatten(1).sum(1).tolist() == [round(p * 784)] * 6
    assert torch.equal(noisy[~dropped], x[~dropped])


def test_masking_noise_with_blocks_drops_whole_aligned_blocks() -> None:
    x = torch.ones(4, 1, 28, 28)
    dropped = (masking_noise(x, 0.25, block=4) == 0)[:, 0].float()
    cells = dropped.view(4, 7, 4, 7, 4).mean(dim=(2, 4))  # (N, 7, 7): 0 or 1 when whole blocks go
    assert torch.equal(cells, cells.round())
    assert cells.flatten(1).sum(1).tolist() == [round(0.25 * 49)] * 4


def test_gaussian_noise_stays_in_the_unit_interval_with_the_requested_spread() -> None:
    torch.manual_seed(0)
    x = torch.full((8, 1, 64, 64), 0.5)
    noisy = gaussian_noise(x, 0.1)
    assert 0.0 <= float(noisy.min()) and float(noisy.max()) <= 1.0
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.05)


def test_the_denoising_loss_corrupts_only_while_training() -> None:
    torch.manual_seed(0)
    model = build("denoising", arch="mlp", noise="mask", noise_level=0.5)
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    clean = model.loss(x)["loss"]
    assert torch.equal(clean, model.loss(x)["loss"])
    model.train()
    assert not torch.allclose(model.loss(x)["loss"], model.loss(x)["loss"])


# ----------------------------------------------------------------------------------------------------------------------
# Training on real images
# ----------------------------------------------------------------------------------------------------------------------


def _seeded_loss(model, x, y) -> float:
    torch.manual_seed(123)  # the same noise and samples before and after training
    with torch.no_grad():
        return float(model.loss(x, y)["loss"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_adam_steps_lower_the_loss_on_fashion_mnist(kind: str, fashion) -> None:
    images, labels = fashion
    x, y = images[:32], labels[:32]
    torch.manual_seed(0)
    model = build(kind, code_dim=16, **({} if kind in ("linear", "mlp") else {"channels": (16, 32)}))
    model.train()
    params = model.generator_parameters() if isinstance(model, VAEGAN) else model.parameters()
    optimizer = torch.optim.Adam(params, lr=2e-3)
    before = _seeded_loss(model, x, y)
    for _ in range(15):
        optimizer.zero_grad()
        model.loss(x, y)["loss"].backward()
        optimizer.step()
    after = _seeded_loss(model, x, y)
    assert after < 0.8 * before, f"{kind}: loss {before:.4f} -> {after:.4f}"


def test_vaegan_losses_train_only_their_own_parameters(fashion) -> None:
    x = fashion[0][:16]
    torch.manual_seed(0)
    model = build("vaegan", channels=(16, 32))
    generator = set(map(id, model.generator_parameters()))
    discriminator = set(map(id, model.discriminator_parameters()))
    assert not generator & discriminator
    assert generator | discriminator == set(map(id, model.parameters()))

    model.loss(x)["loss"].backward()
    assert all(p.grad is None for p in model.discriminator_parameters())
    assert all(p.requires_grad for p in model.discriminator_parameters())
    model.zero_grad(set_to_none=True)
    model.discriminator_loss(x)["loss"].backward()
    assert all(p.grad is None for p in model.generator_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator_parameters())


def test_vaegan_discriminator_steps_lower_its_loss(fashion) -> None:
    x = fashion[0][:32]
    torch.manual_seed(0)
    model = build("vaegan", channels=(16, 32))
    optimizer = torch.optim.Adam(model.discriminator_parameters(), lr=1e-3)
    torch.manual_seed(1)
    before = model.discriminator_loss(x)["loss"].item()
    for _ in range(10):
        optimizer.zero_grad()
        model.discriminator_loss(x)["loss"].backward()
        optimizer.step()
    torch.manual_seed(1)
    assert model.discriminator_loss(x)["loss"].item() < before


def test_the_linear_autoencoder_reaches_the_pca_error_on_fashion_mnist(fashion) -> None:
    images = fashion[0][:1000]
    flat = images.flatten(1).double()
    centred = flat - flat.mean(dim=0)
    singular = torch.linalg.svdvals(centred)
    pca_error = float(singular[16:].pow(2).sum() / centred.numel())  # per-pixel MSE of the best rank-16 fit

    torch.manual_seed(0)
    model = build("linear", code_dim=16)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=250, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model.loss(images)["loss"]
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        error = float(model.loss(images)["loss"])
    assert pca_error * 0.999 <= error <= pca_error * 1.02, f"linear AE {error:.5f}, PCA {pca_error:.5f}"


# ----------------------------------------------------------------------------------------------------------------------
# Rebuilding, backbones, errors
# ----------------------------------------------------------------------------------------------------------------------

VARIANTS = [
    ("linear", {}),
    ("mlp", {"hidden": (64, 32)}),
    ("conv", {"channels": (8, 16), "decoder": "transposed"}),
    ("denoising", {"arch": "mlp", "noise": "mask", "block": 2}),
    ("sparse", {"sparsity": "kl", "rho": 0.1}),
    ("vae", {"beta": 4.0, "recon": "bce"}),
    ("cvae", {"arch": "mlp", "hidden": (50,)}),
    ("vaegan", {"gan_weight": 0.5}),
]


@pytest.mark.parametrize(("kind", "options"), VARIANTS, ids=[k for k, _ in VARIANTS])
def test_a_model_rebuilds_from_its_kind_shape_and_json_options_and_loads_strictly(kind: str, options) -> None:
    torch.manual_seed(0)
    model = build(kind, (1, 32, 32), **options).eval()
    options_back = json.loads(json.dumps(model.options))
    again = build_autoencoder(
        model.kind, model.input_shape, model.code_dim, num_classes=model.num_classes, **options_back
    ).eval()
    assert again.options == model.options
    again.load_state_dict(model.state_dict(), strict=True)
    from_config = autoencoder_from_config(json.loads(json.dumps(model.config()))).eval()
    from_config.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(3, 1, 32, 32)
    assert torch.equal(again.encode(x), model.encode(x))
    assert torch.equal(from_config(x)["recon"], model(x)["recon"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_encoder_backbone_gives_the_codes_of_encode_and_shares_its_state_dict_keys(kind: str) -> None:
    torch.manual_seed(0)
    model = build(kind, (3, 64, 64), code_dim=10).eval()
    backbone = encoder_backbone(model).eval()
    assert backbone.num_features == 10
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(backbone(x), model.encode(x))
    encoder_keys = {k for k in model.state_dict() if k.startswith("encoder.")}
    assert set(backbone.state_dict()) == encoder_keys

    torch.manual_seed(1)
    fresh = build(kind, (3, 64, 64), code_dim=10).eval()
    fresh_backbone = encoder_backbone(fresh).eval()
    fresh_backbone.load_state_dict(backbone.state_dict(), strict=True)
    assert torch.equal(fresh.encode(x), model.encode(x))  # the backbone shares the model's encoder


def test_unknown_kinds_options_and_values_raise_model_error_with_one_line() -> None:
    cases = [
        lambda: build_autoencoder("transformer", (1, 28, 28), 8),
        lambda: build("mlp", depth=3),
        lambda: build("conv", recon="l2"),
        lambda: build("conv", decoder="pixelshuffle"),
        lambda: build("denoising", arch="conv", hidden=(10,)),
        lambda: build("denoising", noise="gaussian", block=2),
        lambda: build("denoising", noise="mask", noise_level=1.5),
        lambda: build("sparse", sparsity="l1", rho=0.1),
        lambda: build("vae", beta=-1.0),
        lambda: build("linear", recon="bce"),
        lambda: build_autoencoder("cvae", (1, 28, 28), 8),
        lambda: build_autoencoder("mlp", (28, 28), 8),
        lambda: build_autoencoder("mlp", (1, 28, 28), 0),
        lambda: build("cvae").loss(torch.rand(2, 1, 28, 28)),
        lambda: build("cvae").loss(torch.rand(2, 1, 28, 28), torch.tensor([0, 10])),
        lambda: build("conv").encode(torch.rand(2, 1, 32, 32)),
    ]
    for case in cases:
        with pytest.raises(ModelError) as info:
            case()
        assert "\n" not in str(info.value)


def test_none_options_fall_back_to_defaults_and_num_classes_is_ignored_by_unconditional_kinds() -> None:
    model = build_autoencoder("conv", (1, 28, 28), 8, num_classes=5, channels=None, decoder=None)
    assert model.options == {"channels": [32, 64], "decoder": "upsample", "recon": "mse"}
    assert model.num_classes is None
