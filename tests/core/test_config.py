from dataclasses import dataclass

import pytest
from conftest import ROOT, tiny_params, with_kmeans

from pipeline.core.config import ConfigError, from_dict, load_params, override, section, to_dict
from pipeline.corpus.demo import DemoConfig
from pipeline.evaluation.report import ReportConfig
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.export.config import ExportConfig
from pipeline.pretraining.hubert import PretrainConfig
from pipeline.students import SweepConfig, parse_students, sweep_students
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.config import TrainConfig
from stages.prepare import PrepareConfig

SECTIONS = {
    "prepare": PrepareConfig,
    "cache_teacher": CacheTeacherConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "pretrain_teacher": PretrainConfig,
    "export": ExportConfig,
    "sweep": SweepConfig,
}


@dataclass(frozen=True)
class Inner:
    rate: float
    names: tuple[str, ...]


@dataclass(frozen=True)
class Outer:
    steps: int
    inner: Inner
    label: str | None = None


def test_nested_dataclass_is_built_and_typed():
    cfg = from_dict(Outer, {"steps": 3, "inner": {"rate": 1, "names": ["a", "b"]}}, "x")
    assert cfg == Outer(steps=3, inner=Inner(rate=1.0, names=("a", "b")))
    assert isinstance(cfg.inner.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": 3, "inner": {"rate": 1.0, "names": []}, "stepz": 1}, "unknown key x.stepz"),
        ({"steps": 3, "inner": {"rate": 1.0}}, "missing key x.inner.names"),
        ({"steps": "3", "inner": {"rate": 1.0, "names": []}}, "x.steps: expected int"),
        ({"steps": True, "inner": {"rate": 1.0, "names": []}}, "x.steps: expected int"),
        ({"steps": 3, "inner": {"rate": "fast", "names": []}}, "x.inner.rate"),
    ],
)
def test_bad_keys_are_named(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        from_dict(Outer, data, "x")


def test_repository_params_load():
    params = load_params(ROOT / "params.yaml")
    for name, cls in SECTIONS.items():
        section(params, name, cls)
    students = parse_students(params)
    assert {"ce", "kd", "dkd_b4", "distilhubert"} <= set(students)
    assert students["dkd_b4"].losses["dkd"].beta == 4.0
    assert sweep_students(params) == {}  # the demo sweeps nothing (demo-full: beta 1 and 8)
    full = sweep_students(load_params(ROOT / "configs" / "demo-full.yaml"))
    assert {n: s.losses["dkd"].beta for n, s in full.items()} == {"dkd_b1": 1.0, "dkd_b8": 8.0}
    base = {k: v for k, v in params["students"]["dkd_b4"].items() if k != "seeds"}
    assert params["sweep"]["base"] == base  # the demo sweeps dkd_b4 (with one training seed)
    for name in ("ce", "kd", "dkd_b4", "distilhubert"):  # the paper's question: 3 seeds or more
        assert len(students[name].training_seeds(0)) >= 3


KD = object()  # stands for the kd student's settings


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"base": {"arch": "lstm"}, "students": {}}, "missing key sweep.base.model"),
        ({"base": KD, "students": {"ce": {}}}, "sweep.students.ce: already the name"),
        ({"base": KD, "students": {"k": {"losses.kd.tua": 2}}}, "sweep.students.k.losses.kd"),
        ({"base": KD, "students": {"a.b": {}}}, "names may hold"),
        ({"base": KD}, "missing key sweep.students"),
    ],
)
def test_sweep_errors_name_the_key(sweep, message):
    if sweep["base"] is KD:
        sweep = {**sweep, "base": tiny_params()["students"]["kd"]}
    params = tiny_params()
    params["sweep"] = sweep
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        sweep_students(params)


def test_student_loss_typo_is_named():
    params = tiny_params()
    params["students"]["kd"]["losses"]["kd"]["tua"] = 2.0
    with pytest.raises(ConfigError, match=r"unknown key students\.kd\.losses\.kd\.tua"):
        parse_students(params)
    params = tiny_params()
    params["students"]["kd"]["losses"]["kdd"] = {"weight": 1.0}
    with pytest.raises(
        ConfigError, match="unknown loss 'kdd'; registered: ce, dkd, feature, kd, masked"
    ):
        parse_students(params)


def test_unknown_section_and_registry_names():
    with pytest.raises(ConfigError, match="no section 'nope'"):
        section({"a": {}}, "nope", Outer)
    params = tiny_params()
    params["prepare"]["source"] = {"kind": "timit"}
    with pytest.raises(ConfigError, match=r"prepare\.source\.kind: unknown corpus source 'timit'"):
        section(params, "prepare", PrepareConfig)


def test_params_has_one_section_per_stage():
    params = load_params(ROOT / "params.yaml")
    assert set(params) == set(SECTIONS) | {"students"}


def test_override_sets_dotted_keys_and_skips_unset_flags():
    params = {"a": {"b": {"c": 1, "d": 2}}, "e": 3}
    changed = override(params, {"a.b.c": 5, "e": None})
    assert changed == {"a": {"b": {"c": 5, "d": 2}}, "e": 3} and params["a"]["b"]["c"] == 1
    with pytest.raises(ConfigError, match="cannot override e.x: e is not a section"):
        override(params, {"e.x": 1})


def test_paper_config_loads_and_its_student_is_paper_sized():
    from pipeline.nn.frames import HUBERT_FRAMES
    from pipeline.students.checkpoint import build_student

    params = load_params(ROOT / "configs" / "paper.yaml")
    for name, cls in SECTIONS.items():
        if name != "pretrain_teacher":  # the paper's teacher is a released checkpoint
            section(params, name, cls)
    assert "pretrain_teacher" not in params
    for student in parse_students(params).values():
        model = build_student(student, 500, HUBERT_FRAMES)
        count = sum(p.numel() for p in model.parameters())
        assert 17e6 < count < 23.49e6  # paper: about 17-18M, below DistilHuBERT's 23.49M
    assert params["cache_teacher"]["teacher"]["source"].startswith("fairseq:")


def test_the_wavlm_config_is_the_papers_with_a_kmeans_wavlm_teacher():
    """configs/wavlm-base-plus.yaml: paper.yaml's recipe (every other setting the same), its
    teacher WavLM Base+ with k-means logits and targets on a configurable layer (no hub access
    here: only the config is read)."""
    paper = load_params(ROOT / "configs" / "paper.yaml")
    wavlm = load_params(ROOT / "configs" / "wavlm-base-plus.yaml")
    for name, cls in SECTIONS.items():
        if name != "pretrain_teacher":
            section(wavlm, name, cls)
    teacher = section(wavlm, "cache_teacher", CacheTeacherConfig).teacher
    assert teacher.source == "hf:microsoft/wavlm-base-plus"
    assert teacher.logits == teacher.targets == "kmeans" and not teacher.trust_checkpoint
    assert 1 <= teacher.kmeans.layer <= 12 and teacher.kmeans.num_clusters == 500
    assert parse_students(wavlm) == parse_students(paper)
    others = {k: v for k, v in wavlm["cache_teacher"].items() if k != "teacher"}
    assert others == {k: v for k, v in paper["cache_teacher"].items() if k != "teacher"}
    assert {k: v for k, v in wavlm.items() if k != "cache_teacher"} == {
        k: v for k, v in paper.items() if k != "cache_teacher"
    }


def test_impossible_sizes_are_config_errors():
    params = tiny_params()
    params["students"]["kd"]["model"]["lstm_layers"] = 0
    with pytest.raises(ConfigError, match="students.kd.model: conv_dim, proj_dim, lstm_layers"):
        parse_students(params)
    params = with_kmeans(tiny_params(), logits="kmeans")
    params["cache_teacher"]["teacher"]["kmeans"]["fit_utterances"] = 0
    with pytest.raises(ConfigError, match="fit_utterances must be >= 1"):
        section(params, "cache_teacher", CacheTeacherConfig)


def test_sections_carry_their_kind_and_name_only_what_they_use():
    """A variant setting names its kind and holds only that variant's keys; optional sections
    must be there when used and absent when not; every error names the full key."""
    params = tiny_params()
    params["cache_teacher"]["backend"] = {"kind": "webdataset", "shard_utterances": 10}
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    assert cfg.backend.kind == "webdataset" and cfg.backend.cfg.shard_utterances == 10
    assert to_dict(cfg)["backend"] == {"kind": "webdataset", "shard_utterances": 10}
    params["cache_teacher"]["backend"]["chunk_frames"] = 64  # a zarr key in a webdataset section
    with pytest.raises(ConfigError, match=r"unknown key cache_teacher\.backend\.chunk_frames"):
        section(params, "cache_teacher", CacheTeacherConfig)
    params = tiny_params()
    params["cache_teacher"]["teacher"]["logits"] = "kmeans"
    with pytest.raises(ConfigError, match=r"cache_teacher\.teacher\.kmeans: needed when"):
        section(params, "cache_teacher", CacheTeacherConfig)
    repo = load_params(ROOT / "params.yaml")
    assert "random" not in repo["cache_teacher"]["teacher"]
    assert set(repo["prepare"]["source"]) - {"kind"} == set(vars(DemoConfig(**{
        k: v for k, v in repo["prepare"]["source"].items() if k != "kind"})))  # fmt: skip


def test_the_full_demo_config_is_params_yaml_with_more_students():
    params = load_params(ROOT / "params.yaml")
    full = load_params(ROOT / "configs" / "demo-full.yaml")
    others = ("students", "sweep")
    assert {k: v for k, v in full.items() if k not in others} == {
        k: v for k, v in params.items() if k not in others
    }
    assert {k: full["students"][k] for k in params["students"]} == params["students"]
    assert len(parse_students(full)) > len(params["students"])
    assert full["sweep"]["base"] == params["sweep"]["base"]
    assert len(sweep_students(full)) > len(params["sweep"]["students"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prepare:\n  source: {kind: demo\n  skip_bad: x\n",
         "params.yaml:3:11: not valid YAML: expected ',' or '}', but got ':' (while parsing a "
         "flow mapping, from line 2)"),
        ("prepare:\n\tskip_bad: true\n",
         "params.yaml:2:1: not valid YAML: found character '\\t' that cannot start any token"),
        ('prepare: "open\n', "params.yaml:2:1: not valid YAML: found unexpected end of stream"),
    ],
)  # fmt: skip
def test_a_params_file_that_is_not_yaml_is_named_in_one_line_at_its_line(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(tmp_path / "params.yaml")
    assert str(caught.value).startswith(f"{tmp_path}/{message}") and "\n" not in str(caught.value)
