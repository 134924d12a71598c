"""The keypoint front end: ``frontend.extract`` (the poses table), one photo's ``result``, the one ``cache``
protocol, the one pool of ``workers``, the pose models in ``estimators/`` (one module each), keypoints read
from a user's file (``keypoint_file``) and a clip's statistics over time (``temporal``)."""
