"""Settings that would silently train backwards (negative weights, rates, clips; a device that is
not there) are config errors naming the key; a damaged training state or a params path that is
a folder is named."""

import pytest
import torch
from cli_runs import one_line_error, params_args, runner, train_kd

from cli.main import app


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["students"]["dkd_b4"]["losses"]["dkd"].update(alpha=-1.0),
         "students.dkd_b4.losses.dkd.alpha"),
        (lambda p: p["students"]["dkd_b4"]["losses"]["dkd"].update(beta=-4.0),
         "students.dkd_b4.losses.dkd.beta"),
        (lambda p: p["students"]["kd"]["losses"]["kd"].update(weight=-1.0),
         "students.kd.losses.kd.weight"),
        (lambda p: p["train"].update(grad_clip=-1.0), "train.grad_clip"),
        (lambda p: p["train"].update(lr=-0.001), "train.lr"),
        (lambda p: p["train"].update(threads=0), "train.threads"),
        (lambda p: p["train"].update(device="gpu"), "train.device"),
    ],
)  # fmt: skip
def test_settings_that_would_train_backwards_are_config_errors(
    tiny_corpus, tiny_cache, tmp_path, edit, key
):
    args = [
        *params_args(tmp_path, edit),
        "--manifest",
        str(tiny_corpus),
        "--cache",
        str(tiny_cache),
    ]
    result = runner.invoke(app, ["train-student", "kd", "--out", str(tmp_path / "kd"), *args])
    one_line_error(result, key, code=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_config_error(tiny_corpus, tiny_cache, tmp_path):
    args = [*params_args(tmp_path, lambda p: p["train"].update(device="cuda"))]
    args += ["--manifest", str(tiny_corpus), "--cache", str(tiny_cache)]
    result = runner.invoke(app, ["train-student", "kd", "--out", str(tmp_path / "kd"), *args])
    one_line_error(result, "train.device: cuda asked for, but CUDA is not available", code=2)
    args = [*params_args(tmp_path, lambda p: p["cache_teacher"]["teacher"].update(device="cuda"))]
    result = runner.invoke(app, ["cache-teacher", "--out", str(tmp_path / "c"), "--manifest",
                                 str(tiny_corpus), *args])  # fmt: skip
    one_line_error(result, "cache_teacher.teacher.device", code=2)


def test_a_truncated_training_state_is_named(tiny_corpus, tiny_cache, tmp_path):
    state = tmp_path / "kd" / "train_state.pt"
    state.parent.mkdir()
    torch.save({"identity": "x", "states": []}, state)
    state.write_bytes(state.read_bytes()[:200])
    result = train_kd(tmp_path, tiny_corpus, tiny_cache)
    one_line_error(result, "train_state.pt: cannot read the training state", "delete it")


def test_params_that_is_a_folder_is_named(tmp_path):
    result = runner.invoke(app, ["train-student", "kd", "--params", str(tmp_path)])
    one_line_error(result, str(tmp_path), "is a folder", code=2)
