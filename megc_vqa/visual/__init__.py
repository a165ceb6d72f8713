"""Visual inputs for a clip: frame decoding, key-frame samplers, optical flow, apex estimation, the face
pipeline (detection, alignment, registration, magnification), caching.

Import the modules directly; this package imports none of them, so the light ones load without OpenCV:

``spec``      the sampler spec (``parse_sampler``, ``SamplerSpec``) and the flow and apex method names (light)
``errors``    ``FrameError`` and ``FaceSkip`` (light)
``frames``    ``FrameReader``, ``read_frames``, ``list_frames``, ``clip_from_folder``
``samplers``  ``sample(clip, spec, ...) -> VisualInputs``, the cache
``flow``      ``flow_image``, ``diff_image``
``apex``      ``estimate_apex``
``face``      ``face_box``, ``locate_face``, ``FaceDetectorUnavailable``
``facepipe``  crop, alignment, registration, magnification
``toyclips``  small synthetic clips for tests and checks
"""
