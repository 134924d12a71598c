"""The image network: timm backbones and their offline weights (``backbones``), ``PoseNet`` with one head per
hierarchy level, its checkpoint format, device and AMP choice (``network``)."""
