"""An exported student as an upstream of SUPERB's toolkit (s3prl): this folder is copied into
each export (``<export>/s3prl/hubert_kd``), to be copied into ``s3prl/upstream/``. It needs
only torch and transformers: the student is the exported directory's transformers model."""
