"""`evaluate` (``evaluate``) and what it writes: metrics and plots (``metrics``), the label review sheet
(``review``) and report.html (``report``)."""
