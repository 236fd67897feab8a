"""Value ranges of every experiment key, checked when the config is resolved
(so ``--dry-run`` catches them), and the builder options of vit16.preflight."""

import dataclasses
import typing

import pytest

from vit16.commands.train import main
from vit16.config import SECTIONS, ConfigError, ExperimentConfig, check_ranges, load_tables, resolve
from vit16.config_checks import CHOICES, RANGES, range_problems
from vit16.experiment import DEFAULT_EXPERIMENTS
from vit16.preflight import check_model_options, check_options, check_schedule_options

TABLES = load_tables(DEFAULT_EXPERIMENTS)


def error(*items: str, name: str = "quick") -> str:
    with pytest.raises(ConfigError) as info:
        resolve(name, TABLES, list(items))
    return str(info.value)


# quick: epochs 10, batch_size 128, optim.lr 2e-3, slurm.timeout_min 30
@pytest.mark.parametrize("item, message", [
    # the cases
    ("optim.label_smoothing=2", "[quick.optim]: label_smoothing = 2 must be in [0, 1) (0 = off)"),
    ("model.drop_path=1.5", "[quick.model]: drop_path = 1.5 must be in [0, 1) (0 = off; 1 would drop everything)"),
    ("model.embed_dim=0", "[quick.model]: embed_dim = 0 must be >= 1"),
    ("eval_batch_size=-1", "[quick]: eval_batch_size = -1 must be >= 0 (0 = the micro batch size)"),
    ("schedule.min_lr=0.01", "[quick.schedule]: min_lr = 0.01 must be in [0, optim.lr = 0.002]"),
    ("optim.clip_grad_norm=-1.0", "[quick.optim]: clip_grad_norm = -1.0 must be >= 0 (0 = off)"),
    ("max_steps=-5", "[quick]: max_steps = -5 must be >= 0 (0 = no cap)"),
    ("checkpoint_minutes=-1", "[quick]: checkpoint_minutes = -1 must be >= 0 (0 = at the end of every epoch)"),
    # top level
    ("seed=-1", "[quick]: seed = -1 must be >= 0"),
    ("epochs=0", "[quick]: epochs = 0 must be >= 1"),
    ("batch_size=0", "[quick]: batch_size = 0 must be >= 1"),
    ("micro_batch_size=-2", "[quick]: micro_batch_size = -2 must be >= 0 (0 = batch_size / world size)"),
    ("micro_batch_size=48", "[quick]: micro_batch_size = 48 must be 0 or a divisor of batch_size = 128"),
    ("micro_batch_size=256", "[quick]: micro_batch_size = 256 must be 0 or a divisor of batch_size = 128"),
    ("amp='fp8'", "[quick]: amp = 'fp8' must be one of 'auto', 'bf16', 'fp16', 'off'"),
    # model (set keys only)
    ("model.num_classes=0", "[quick.model]: num_classes = 0 must be >= 1"),
    ("model.num_heads=0", "[quick.model]: num_heads = 0 must be >= 1"),
    ("model.patch_size=-4", "[quick.model]: patch_size = -4 must be >= 1"),
    ("model.mlp_ratio=0.0", "[quick.model]: mlp_ratio = 0.0 must be > 0"),
    ("model.mlp_dim=-1", "[quick.model]: mlp_dim = -1 must be >= 0 (0 = embed_dim x mlp_ratio)"),
    ("model.representation_size=-1", "[quick.model]: representation_size = -1 must be >= 0 (0 = no pre-logits layer)"),
    ("model.dropout=1.0", "[quick.model]: dropout = 1.0 must be in [0, 1) (0 = off; 1 would drop everything)"),
    ("model.attn_dropout=-0.1", "[quick.model]: attn_dropout = -0.1 must be in [0, 1) (0 = off; 1 would drop everything)"),
    # data
    ("data.img_size=0", "[quick.data]: img_size = 0 must be >= 1"),
    ("data.fraction=0", "[quick.data]: fraction = 0 must be in (0, 1] (1 = the whole training set)"),
    ("data.random_erasing=1.5", "[quick.data]: random_erasing = 1.5 must be in [0, 1] (a probability)"),
    ("data.mix_prob=-0.5", "[quick.data]: mix_prob = -0.5 must be in [0, 1] (a probability)"),
    ("data.repeated_aug=0", "[quick.data]: repeated_aug = 0 must be >= 1 (1 = off)"),
    ("data.mixup_alpha=-1", "[quick.data]: mixup_alpha = -1 must be >= 0 (0 = off)"),
    ("data.num_workers=-1", "[quick.data]: num_workers = -1 must be >= 0 (0 = load in the main process)"),
    ("data.auto_augment='randaug'", "[quick.data]: auto_augment = 'randaug' must be one of '', 'randaugment', 'autoaugment', 'trivialaugment'"),
    ("data.label='medium'", "[quick.data]: label = 'medium' must be one of 'fine', 'coarse'"),
    # optim
    ("optim.lr=0", "[quick.optim]: lr = 0 must be > 0"),
    ("optim.lr=nan", "[quick.optim]: lr = nan must be a finite number > 0"),
    ("optim.lr=inf", "[quick.optim]: lr = inf must be a finite number > 0"),
    ("optim.weight_decay=-0.1", "[quick.optim]: weight_decay = -0.1 must be >= 0"),
    ("optim.betas=[0.9, 1.0]", "[quick.optim]: betas = [0.9, 1.0] must each be in [0, 1)"),
    ("optim.betas=[0.9]", "[quick.optim]: betas = [0.9] must be two numbers in [0, 1), e.g. [0.9, 0.999]"),
    ("optim.eps=0", "[quick.optim]: eps = 0 must be > 0"),
    ("optim.momentum=1.0", "[quick.optim]: momentum = 1.0 must be in [0, 1)"),
    ("optim.head_lr_mult=0", "[quick.optim]: head_lr_mult = 0 must be > 0 (1 = the same LR as the body)"),
    ("optim.layer_decay=1.5", "[quick.optim]: layer_decay = 1.5 must be in (0, 1] (1 = off)"),
    ("optim.name='lamb'", "[quick.optim]: name = 'lamb' must be one of 'adamw', 'sgd'"),
    # schedule
    ("schedule.warmup_epochs=11", "[quick.schedule]: warmup_epochs = 11 must be in [0, epochs = 10] (0 = no warmup)"),
    ("schedule.warmup_epochs=-1", "[quick.schedule]: warmup_epochs = -1 must be in [0, epochs = 10] (0 = no warmup)"),
    ("schedule.warmup_start_lr=0.003", "[quick.schedule]: warmup_start_lr = 0.003 must be in [0, optim.lr = 0.002]"),
    ("schedule.min_lr=-1e-6", "[quick.schedule]: min_lr = -1e-06 must be in [0, optim.lr = 0.002]"),
    ("schedule.milestones=[5, 20]", "[quick.schedule]: milestones = [5, 20] must each be in [0, epochs = 10]"),
    ("schedule.gamma=0", "[quick.schedule]: gamma = 0 must be in (0, 1]"),
    # slurm
    ("slurm.nodes=0", "[quick.slurm]: nodes = 0 must be >= 1"),
    ("slurm.gpus_per_node=-1", "[quick.slurm]: gpus_per_node = -1 must be >= 0 (0 = none)"),
    ("slurm.tasks_per_node=-1", "[quick.slurm]: tasks_per_node = -1 must be >= 0 (0 = one per GPU)"),
    ("slurm.cpus_per_task=-1", "[quick.slurm]: cpus_per_task = -1 must be >= 0 (0 = the cluster's default)"),
    ("slurm.mem_gb=-8", "[quick.slurm]: mem_gb = -8 must be >= 0 (0 = the cluster's default)"),
    ("slurm.timeout_min=0", "[quick.slurm]: timeout_min = 0 must be >= 1"),
    ("slurm.array_parallelism=0", "[quick.slurm]: array_parallelism = 0 must be >= 1"),
    ("slurm.max_requeues=-1", "[quick.slurm]: max_requeues = -1 must be >= 0"),
    ("slurm.signal_delay_s=1800", "[quick.slurm]: signal_delay_s = 1800 must be in [0, slurm.timeout_min x 60 = 1800)"),
    # prune
    ("prune.rounds=0", "[quick.prune]: rounds = 0 must be >= 1 (round 0 is the dense model)"),
    ("prune.rate=1.0", "[quick.prune]: rate = 1.0 must be in [0, 1)"),
    ("prune.rewind_epoch=11", "[quick.prune]: rewind_epoch = 11 must be in [0, epochs = 10] (0 = the initial weights)"),
    ("prune.reg=-1", "[quick.prune]: reg = -1 must be >= 0"),
    ("prune.reg_exponent=0", "[quick.prune]: reg_exponent = 0 must be > 0"),
    ("prune.method='obd'", "[quick.prune]: method = 'obd' must be one of '', 'imp', 'refill', 'rsst'"),
    ("prune.scope='row'", "[quick.prune]: scope = 'row' must be one of 'global', 'layer'"),
])
def test_a_bad_value_is_one_line_naming_table_key_value_and_range(item, message):
    assert error(item) == message


def test_cross_key_rules():
    assert error("optim.name='sgd'", "optim.nesterov=true", "optim.momentum=0.0") == (
        "[quick.optim]: nesterov = true needs momentum > 0 (momentum = 0.0)")
    resolve("quick", TABLES, ["optim.nesterov=true", "optim.momentum=0.0"])  # adamw ignores nesterov
    # the bound follows the other key, --set included
    assert error("epochs=4", "schedule.warmup_epochs=5").endswith("must be in [0, epochs = 4] (0 = no warmup)")
    resolve("quick", TABLES, ["optim.lr=0.5", "schedule.min_lr=0.1"])


@pytest.mark.parametrize("items", [
    # 0 where 0 means off / default
    ["optim.clip_grad_norm=0", "max_steps=0", "checkpoint_minutes=0", "eval_batch_size=0",
     "micro_batch_size=0", "optim.label_smoothing=0", "schedule.warmup_epochs=0", "seed=0"],
    ["data.val_size=0", "data.train_limit=0", "data.num_workers=0", "data.crop_padding=0",
     "data.mixup_alpha=0", "data.cutmix_alpha=0", "data.random_erasing=0", "data.mix_prob=0"],
    ["model.mlp_dim=0", "model.representation_size=0", "model.dropout=0", "model.attn_dropout=0",
     "model.drop_path=0"],
    ["slurm.gpus_per_node=0", "slurm.tasks_per_node=0", "slurm.cpus_per_task=0", "slurm.mem_gb=0",
     "slurm.max_requeues=0", "slurm.signal_delay_s=0"],
    ["prune.rate=0", "prune.reg=0", "prune.rewind_epoch=0", "optim.momentum=0", "optim.weight_decay=0",
     "optim.betas=[0, 0]"],
    # exact upper bounds and the largest values below open ones
    ["data.fraction=1", "data.random_erasing=1", "data.mix_prob=1", "optim.layer_decay=1",
     "schedule.gamma=1", "optim.betas=[0.9, 0.999999]", "optim.label_smoothing=0.999"],
    ["schedule.min_lr=0.002", "schedule.warmup_start_lr=0.002", "schedule.warmup_epochs=10",
     "prune.rewind_epoch=10", "schedule.milestones=[0, 10]", "micro_batch_size=128"],
    ["slurm.signal_delay_s=1799", "micro_batch_size=1", "model.drop_path=0.99", "prune.rate=0.99",
     "data.repeated_aug=1", "slurm.nodes=1"],
    ["slurm.timeout_min=1", "slurm.signal_delay_s=59"],
    ["optim.name='SGD'", "amp='off'", "data.auto_augment=''", "data.label='coarse'", "prune.method=''"],
])
def test_edge_values_are_accepted(items):
    cfg = resolve("quick", TABLES, items)
    assert range_problems(cfg) == []


def test_model_keys_left_unset_are_not_checked():
    cfg = resolve("quick", TABLES)
    assert cfg.model.embed_dim is None and cfg.model.dropout is None
    assert range_problems(cfg) == []
    assert range_problems(ExperimentConfig()) == []


def test_range_problems_lists_every_problem_and_sections_filter():
    cfg = ExperimentConfig(name="t", epochs=0, max_steps=-1)
    cfg.optim.label_smoothing = 2.0
    cfg.data.fraction = 0.0
    assert range_problems(cfg) == [
        "[t]: epochs = 0 must be >= 1",
        "[t]: max_steps = -1 must be >= 0 (0 = no cap)",
        "[t.data]: fraction = 0.0 must be in (0, 1] (1 = the whole training set)",
        "[t.optim]: label_smoothing = 2.0 must be in [0, 1) (0 = off)",
    ]
    assert range_problems(cfg, ("data",)) == [
        "[t.data]: fraction = 0.0 must be in (0, 1] (1 = the whole training set)"]
    with pytest.raises(ConfigError, match=r"^\[t.data\]: fraction = 0.0 must be in \(0, 1\]"):
        check_ranges(cfg, ("data", "optim"))
    check_ranges(cfg, ("model", "schedule"))
    with pytest.raises(ValueError, match="unknown config section"):
        range_problems(cfg, ("dat",))


def test_unnamed_config_says_name():
    cfg = ExperimentConfig(seed=-3)
    assert range_problems(cfg) == ["[NAME]: seed = -3 must be >= 0"]


def _numeric(tp) -> bool:
    args = typing.get_args(tp) or (tp,)
    return any(a in (int, float) or typing.get_origin(a) is list and typing.get_args(a)[0] in (int, float)
               for a in args)


def test_every_numeric_key_of_every_table_has_a_range():
    parts = {"": ExperimentConfig, **SECTIONS}
    for section, cls in parts.items():
        hints = typing.get_type_hints(cls)
        numeric = {f.name for f in dataclasses.fields(cls) if _numeric(hints[f.name])}
        assert set(RANGES[section]) == numeric, section
        for key in CHOICES.get(section, {}):
            assert hints[key] is str, (section, key)


def test_every_repository_table_resolves_and_builds():
    for name in TABLES:
        cfg = resolve(name, TABLES)
        assert range_problems(cfg) == [], name
        check_options(cfg)


def test_dry_run_reports_a_bad_value_as_one_line(capsys):
    assert main(["--dry-run", "quick", "--set", "optim.label_smoothing=2"]) == 2
    err = capsys.readouterr().err
    assert err == "error: [quick.optim]: label_smoothing = 2 must be in [0, 1) (0 = off)\n"


@pytest.mark.parametrize("name, items, message", [
    ("resnet50_cifar", ["model.depth=3"],
     "[resnet50_cifar.model]: model 'resnet50_cifar' has no option 'depth'; valid options: num_classes"),
    ("quick", ["model.num_heads=3"], "[quick.model]: embed_dim 128 is not divisible by num_heads 3"),
    ("quick", ["model.pool='avg'"], "[quick.model]: pool must be 'cls' or 'gap', got 'avg'"),
    ("quick", ["model.patch_size=5"], "[quick.model]: img_size 32 is not a multiple of patch_size 5; "
     "choose sizes such that img_size % patch_size == 0"),
    ("quick", ["data.img_size=64"], "[quick.model]: the model takes 32px images (the default of "
     "'vit_quick') but data.img_size = 64; set model.img_size = 64 (or data.img_size = 32)"),
    ("quick", ["model.img_size=64"], "[quick.model]: the model takes 64px images (model.img_size) "
     "but data.img_size = 32; set model.img_size = 32 (or data.img_size = 64)"),
    ("quick", ["model.mlp_ratio=3.0"], "[quick.model]: mlp_ratio = 3.0 has no effect: model "
     "'vit_quick' sets mlp_dim = 256; set model.mlp_dim, or model.mlp_dim = 0 to size the MLP by mlp_ratio"),
])
def test_model_options_the_builder_rejects_are_one_config_error(name, items, message):
    cfg = resolve(name, TABLES, items)
    with pytest.raises(ConfigError) as info:
        check_model_options(cfg)
    assert str(info.value) == message


def test_model_options_that_build_return_the_meta_model():
    model = check_model_options(resolve("quick", TABLES, ["model.mlp_ratio=3.0", "model.mlp_dim=0",
                                                          "model.depth=2"]), num_classes=7)
    assert model.head.out_features == 7 and model.blocks[0].mlp.fc1.out_features == 384
    assert len(model.blocks) == 2 and next(model.parameters()).device.type == "meta"
    both = resolve("quick", TABLES, ["model.img_size=64", "data.img_size=64"])
    assert check_model_options(both).patch_embed.img_size == 64


def test_optimizer_and_schedule_options_the_builders_reject():
    with pytest.raises(ConfigError) as info:
        check_options(resolve("resnet50_cifar", TABLES, ["optim.layer_decay=0.5"]))
    assert str(info.value).startswith("[resnet50_cifar.optim]: optim.layer_decay = 0.5 needs a model "
                                      "with a `blocks` ModuleList")
    with pytest.raises(ConfigError) as info:
        check_schedule_options(resolve("quick", TABLES, ["schedule.name='step'"]))
    assert str(info.value) == ("[quick.schedule]: schedule 'step' needs milestones (epochs), "
                               "e.g. schedule.milestones = [30, 60, 90]")
    check_schedule_options(resolve("quick", TABLES, ["schedule.name='step'", "schedule.milestones=[5]"]))
