import pytest

from cnnexp.config import build_config, config_from_dict, load_yaml
from cnnexp.errors import ConfigError


def test_defaults_are_resolved_and_complete():
    cfg = build_config()
    assert cfg.data.dataset == "digits"
    # digits: no augmentation by default, every None filled in
    assert cfg.data.augment.horizontal_flip is False
    assert cfg.data.augment.shift == 0.0
    assert None not in (cfg.data.augment.rotation, cfg.data.augment.zoom)
    assert cfg.flat()["model.family"] == "plain"


def test_dataset_specific_augmentation_defaults():
    fashion = build_config(overrides={"data.dataset": "fashion_mnist"})
    assert fashion.data.augment.horizontal_flip is True
    assert fashion.data.augment.shift > 0
    # Flip test-time augmentation follows flip training unless set explicitly.
    assert fashion.model.flip_tta is True
    assert build_config().model.flip_tta is False
    assert build_config(overrides={"data.dataset": "fashion_mnist", "model.flip_tta": False}).model.flip_tta is False
    folder = build_config(overrides={"data.dataset": "folder:/tmp/x"})
    assert folder.data.image_size == (32, 32)


def test_cli_strings_are_coerced():
    cfg = build_config(
        overrides={
            "train.learning_rate": "0.01",
            "train.epochs": "3",
            "model.batch_norm": "false",
            "data.image_size": "28x28",
            "data.train_subset": "none",
        }
    )
    assert cfg.train.learning_rate == 0.01 and cfg.train.epochs == 3
    assert cfg.model.batch_norm is False
    assert cfg.data.image_size == (28, 28)
    assert cfg.data.train_subset is None


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"data.dataset": "imagenet"}, "data.dataset='imagenet' is unknown"),
        ({"train.learning_rate": -0.1}, "train.learning_rate=-0.1 must be positive"),
        ({"data.val_fraction": 0.5, "data.test_fraction": 0.5}, "must be below 1"),
        ({"model.family": "vgg"}, "model.family='vgg' is not one of"),
        ({"train.optimizer": "lion"}, "train.optimizer='lion'"),
        ({"train.epochs": "many"}, "train.epochs: expected a number"),
        ({"train.epochs": 1.5}, "expected a whole number"),
        ({"data.augment.horizontal_flip": True}, "not allowed for digits"),
        ({"data.dataset": "mnist", "model.flip_tta": True}, "model.flip_tta=true is not allowed for mnist"),
        ({"model.blokcs": 3}, "unknown key 'model.blokcs'"),
        ({"model.dropout": 1.2}, "model.dropout=1.2"),
        ({"train.system_metrics": "sometimes"}, "train.system_metrics: expected true or false, got 'sometimes'"),
    ],
)
def test_bad_values_name_the_problem(overrides, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        build_config(overrides=overrides)
    assert fragment in str(err.value)


def test_logged_config_round_trips():
    cfg = build_config(overrides={"data.dataset": "mnist", "model.family": "residual"})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


def test_yaml_file_with_unknown_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        build_config(load_yaml(path))
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("flags, expected", [("fpu avx2 amx_bf16 amx_tile", "mixed_bfloat16"), ("fpu avx2", "float32")])
def test_auto_precision_follows_native_bf16(tmp_path, monkeypatch, flags, expected):
    from cnnexp import hardware

    read_flags = hardware.cpu_flags.__wrapped__  # uncached
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: read_flags(str(cpuinfo)))
    assert build_config().train.precision == expected  # resolved, so the logged config says which
    assert build_config(overrides={"train.precision": "float32"}).train.precision == "float32"
    assert read_flags(str(tmp_path / "missing")) == frozenset()
