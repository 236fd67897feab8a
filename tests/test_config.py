"""experiments.toml schema: inheritance, validation, --set parsing, CLI errors."""

import pytest

from vit16.commands.train import main, toml_dumps
from vit16.config import ConfigError, load_tables, parse_override, resolve
import tomllib

TABLES = {
    "parent": {"epochs": 10, "model": {"name": "vit_tiny", "depth": 4}, "optim": {"lr": 1e-3}},
    "child": {"base": "parent", "model": {"depth": 2}, "optim": {"weight_decay": 0.1}},
}


def test_base_inheritance_merges_sub_tables():
    cfg = resolve("child", TABLES)
    assert (cfg.epochs, cfg.model.name, cfg.model.depth) == (10, "vit_tiny", 2)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-3, 0.1)
    assert cfg.name == "child"


def test_set_overrides_parse_toml_values():
    cfg = resolve("child", TABLES, ["optim.lr=3e-4", "model.name=vit_small", "data.hflip=false",
                                    "optim.betas=[0.9, 0.95]", "epochs=3"])
    assert cfg.optim.lr == 3e-4 and cfg.model.name == "vit_small" and cfg.data.hflip is False
    assert cfg.optim.betas == [0.9, 0.95] and cfg.epochs == 3
    assert parse_override("init=runs/x/best.pt") == (["init"], "runs/x/best.pt")


def test_unknown_key_names_table_key_and_close_matches():
    with pytest.raises(ConfigError, match=r"\[child.model\]: unknown key 'dept'; did you mean depth\?"):
        resolve("child", {**TABLES, "child": {"base": "parent", "model": {"dept": 2}}})
    with pytest.raises(ConfigError, match=r"\[parent\]: unknown key 'epoch'; did you mean epochs"):
        resolve("parent", TABLES, ["epoch=3"])


def test_wrong_type_and_bad_override_and_cycle():
    with pytest.raises(ConfigError, match=r"epochs = 'ten' has the wrong type; expected int"):
        resolve("parent", TABLES, ["epochs='ten'"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        resolve("parent", TABLES, ["epochs"])
    with pytest.raises(ConfigError, match="base cycle a -> b -> a"):
        resolve("a", {"a": {"base": "b"}, "b": {"base": "a"}})
    with pytest.raises(ConfigError, match="base 'nope' is not a table"):
        resolve("a", {"a": {"base": "nope"}})


def test_unknown_experiment_lists_known():
    with pytest.raises(ConfigError, match="unknown experiment 'chld': did you mean child.*known experiments: child, parent"):
        resolve("chld", TABLES)


def test_repository_experiments_all_resolve():
    from vit16.experiment import DEFAULT_EXPERIMENTS

    tables = load_tables(DEFAULT_EXPERIMENTS)
    for required in ("quick", "small_vit_cifar", "small_vit_cifar_seed", "vitb16_cifar_scratch", "resnet50_cifar"):
        assert required in tables
    for name in tables:
        assert resolve(name, tables).name == name


def test_seed_recipe_values():
    from vit16.experiment import DEFAULT_EXPERIMENTS

    cfg = resolve("vitb16_cifar_scratch", load_tables(DEFAULT_EXPERIMENTS))
    assert (cfg.model.name, cfg.data.img_size, cfg.epochs, cfg.batch_size) == ("vit_b16", 224, 200, 512)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.model.dropout) == ("adamw", 1e-4, 0.1, 0.1)
    assert (cfg.schedule.warmup_epochs, cfg.schedule.warmup_start_lr, cfg.schedule.min_lr) == (10, 1e-5, 1e-6)
    assert cfg.optim.clip_grad_norm == 1.0


def test_dry_run_prints_resolved_toml(capsys):
    assert main(["quick", "--dry-run", "--set", "optim.lr=0.5"]) == 0
    out = capsys.readouterr().out
    parsed = tomllib.loads(out)
    assert parsed["name"] == "quick" and parsed["optim"]["lr"] == 0.5
    assert out.startswith("# experiment quick:")


def test_toml_dumps_round_trip():
    d = {"a": 1, "s": 'x"y', "l": [1.5, 2], "b": True, "t": {"k": "v", "u": {"z": 0}}}
    assert tomllib.loads(toml_dumps(d)) == d


@pytest.mark.parametrize("argv, message", [
    (["quik"], "error: unknown experiment 'quik': did you mean quick"),
    (["quick", "--set", "model.name=vit_tin", "--dry-run"], "error: unknown model 'vit_tin': did you mean vit_tiny"),
    (["quick", "--set", "data.name=cifar11", "--dry-run"], "error: unknown dataset 'cifar11'"),
    (["quick", "--set", "schedule.name=cosin", "--dry-run"], "error: unknown schedule 'cosin'"),
    ([], "error: name an experiment"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_list_shows_experiments_and_registries(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for word in ("quick", "small_vit_cifar", "vit_b16", "10.70M", "cifar10", "warmup_cosine"):
        assert word in out


def test_missing_data_is_one_line_naming_paths_and_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VIT16_DATA", raising=False)
    missing = tmp_path / "nowhere"
    assert main(["quick", "--data-root", str(missing), "--set", "data.download=false",
                 "--out", str(tmp_path / "run"), "--results", str(tmp_path / "R.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"error: data set 'cifar10' not found; tried {missing}/cifar-10-batches-py/test_batch, {missing}/cifar10/train" in err
    assert "download = true" in err and "--data-root" in err
    assert not (tmp_path / "R.md").exists()


def test_bad_option_value_is_one_line(tmp_path, capsys):
    assert main(["quick", "--set", "amp=fp8", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == "error: [quick]: amp = 'fp8' must be one of 'auto', 'bf16', 'fp16', 'off'\n"
    assert not (tmp_path / "run").exists()  # caught when the config is resolved


def test_failed_download_is_one_line(tmp_path, capsys):
    """quick downloads CIFAR-10 when no copy is found; offline (the test suite
    blocks the network) that is one error line naming the cause and the fix."""
    empty = tmp_path / "empty"
    assert main(["quick", "--data-root", str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: data set 'cifar10': downloading it to {empty} failed" in err
    assert "tests must not download" in err and "--data-root" in err
