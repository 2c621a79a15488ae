"""One router per resource: searches, images, health and information, and the web page."""
