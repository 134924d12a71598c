"""A run folder (``folder``: every file name; config.json; the fit command that resumes it), the prediction
table's columns (``predtable``), the cross-fitting loop (``crossfit``) and a run's out-of-fold table (``oof``)."""
