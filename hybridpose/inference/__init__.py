"""Prediction: ``api.predict`` (every input kind and run kind: photos, clips, the camera, Ray), the photo
classifier of a finished run (``classifier``) fed by forked workers (``pipeline``), photos streamed to a table
(``photos``) and clips (``clips``)."""
