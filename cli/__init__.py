"""The ``simsearch`` command line: a thin click layer over the ``simsearch`` library."""
