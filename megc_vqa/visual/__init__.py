"""Visual inputs for a clip: frame decoding, key-frame samplers, optical flow, apex estimation, caching."""
