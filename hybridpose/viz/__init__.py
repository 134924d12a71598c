"""Drawing: skeleton and label on frames and videos (``annotate``), figures and contact sheets (``plots``)."""
