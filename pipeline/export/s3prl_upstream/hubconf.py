"""s3prl's entry point for a hubert-kd student: copy this folder into ``s3prl/upstream/``,
append ``from s3prl.upstream.hubert_kd.hubconf import *`` to ``s3prl/hub.py`` (its list of
upstreams), then ``python3 run_downstream.py -m train -n <name> -u hubert_kd_local -k
<export>/hf -d asr``."""

from .expert import UpstreamExpert as _UpstreamExpert


def hubert_kd_local(ckpt: str, *args, **kwargs):
    """The student exported at ``ckpt`` (its ``hf`` directory), as an s3prl upstream."""
    return _UpstreamExpert(ckpt, *args, **kwargs)
