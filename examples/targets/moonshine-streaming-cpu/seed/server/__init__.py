"""A naive streaming speech-recognition server for the moonshine-streaming-cpu target (the seed deliverable)."""
