"""Images in and out: decoding uploads safely, and a finished image's provenance, watermark, PNG and store."""
