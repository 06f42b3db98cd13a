"""The deliverable: an image generation server for the kit's Janus model (start with ``python -m server``)."""
