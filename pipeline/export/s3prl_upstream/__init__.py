"""An exported student as an upstream of SUPERB's toolkit (s3prl): this folder is copied into
each export (``<export>/s3prl/hubert_kd``), to be copied into ``s3prl/upstream/`` and registered
by one line appended to ``s3prl/hub.py``, which imports a fixed list of upstreams:
``from s3prl.upstream.hubert_kd.hubconf import *`` (docs/export.md). It needs only torch and
transformers: the student is the exported directory's transformers model."""
