"""torch.hub and s3prl entry points for students distilled with hubert-kd.

    upstream = torch.hub.load("path/to/hubert-kd", "hubert_kd_student", "exports/dkd_b4/hf",
                              source="local")
    upstream([wav])["hidden_states"]  # every layer, one frame every 320 samples

s3prl (SUPERB): see the README, "Using an exported student".
"""

dependencies = ["torch", "huggingface_hub", "safetensors"]  # transformers is not needed to run one


def hubert_kd_student(ckpt: str, *args, **kwargs):
    """The student at ``ckpt`` (an exported directory or a ``model.pt``) as an upstream."""
    from pipeline.export.superb import UpstreamExpert

    return UpstreamExpert(ckpt, *args, **kwargs)
