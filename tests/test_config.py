import pytest
import yaml

from cnnexp.config import ExperimentConfig, build_config, logged_config
from cnnexp.config_io import load_yaml, parse_yaml
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
        ({"model.block_order": "bn_conv"}, "model.block_order='bn_conv' is not one of: conv_bn_pool, conv_pool_bn"),
        ({"model.tta_shift": 5}, "model.tta_shift=5 must be 0 (off) to 3 pixels"),
        ({"train.ema_momentum": 1.0}, "train.ema_momentum=1.0 must be in [0, 1)"),
    ],
)
def test_bad_values_name_the_problem(overrides, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        build_config(overrides=overrides)
    assert fragment in str(err.value)


def _every_field_set() -> dict:
    """A value other than the default for every config field, of every type the config has."""
    return {
        "data.dataset": "folder:/some/where",
        "data.data_dir": "/data",
        "data.val_fraction": 0.15,
        "data.test_fraction": 0.25,
        "data.train_subset": 500,
        "data.image_size": "40x48",
        "data.channels": 3,
        "data.skip_bad_images": True,
        "data.augment.rotation": 0.05,
        "data.augment.shift": 0.1,
        "data.augment.zoom": 0.1,
        "data.augment.horizontal_flip": True,
        "model.family": "residual",
        "model.blocks": 2,
        "model.filters": 16,
        "model.kernel_size": 5,
        "model.convs_per_block": 2,
        "model.conv_type": "separable",
        "model.batch_norm": False,
        "model.block_order": "conv_pool_bn",
        "model.bn_scale": False,
        "model.dropout": 0.2,
        "model.pooling": "avg",
        "model.head_units": 0,
        "model.head_dropout": 0.0,
        "model.flip_tta": False,
        "model.tta_shift": 2,
        "model.whiten_init": False,  # true needs a standard convolution; this case's is separable
        "model.dirac_init": False,
        "model.fused_batch_norm": False,
        "train.optimizer": "sgd",
        "train.learning_rate": 0.01,
        "train.weight_decay": 0.001,
        "train.momentum": 0.8,
        "train.batch_size": 32,
        "train.epochs": 3,
        "train.label_smoothing": 0.0,
        "train.ema_momentum": 0.95,
        "train.early_stopping_patience": 0,
        "train.lr_schedule": "cosine",
        "train.warmup_epochs": 1.5,
        "train.time_budget_minutes": 1.5,
        "train.seed": 7,
        "train.deterministic": False,
        "train.precision": "float32",
        "train.system_metrics": False,
        "experiment_name": "exp",
        "run_name": "name",
    }


def test_every_field_round_trips_through_the_logged_yaml():
    overrides = _every_field_set()
    assert set(overrides) == set(ExperimentConfig().flat()), "set every field, so none escapes the round trip"
    cfg = build_config(overrides=overrides)
    text = cfg.to_yaml()
    assert "!!" not in text  # plain, portable YAML: nothing a safe loader refuses
    assert yaml.safe_load(text) == cfg.to_dict()
    again = build_config(parse_yaml(text, "config.yaml"))
    assert again == cfg and again.data.image_size == (40, 48)


def test_the_tuple_tag_of_0_1_0_is_read_and_no_other_python_tag():
    legacy = "data:\n  dataset: folder:/x\n  image_size: !!python/tuple [32, 32]\n"
    assert build_config(parse_yaml(legacy, "config.yaml")).data.image_size == (32, 32)
    with pytest.raises(ConfigError, match="config.yaml: not valid YAML"):
        parse_yaml("x: !!python/object/apply:os.system ['true']\n", "config.yaml")


def test_non_utf8_config_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\n")
    with pytest.raises(ConfigError, match="c.yaml: not UTF-8"):
        load_yaml(path)


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


def test_a_logged_config_that_predates_a_key_rebuilds_what_it_trained():
    logged = build_config().to_dict()
    del logged["model"]["block_order"], logged["model"]["tta_shift"], logged["train"]["ema_momentum"]
    del logged["model"]["fused_batch_norm"]
    old = logged_config(logged)
    assert old.model.block_order == "conv_bn_pool" and old.model.tta_shift == 0 and old.train.ema_momentum == 0
    assert old.model.fused_batch_norm is False and build_config().model.fused_batch_norm is True
    assert logged_config(build_config().to_dict()) == build_config()  # a current config is taken as it is
