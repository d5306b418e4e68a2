"""benchmarks/select_recipe.py: every configuration is a valid run, shared settings share a run, the table marks
each method's best, and bad values are refused before a pretraining."""
import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/select_recipe.py")


def test_every_configuration_is_a_valid_run(script):
    from cwarp.train.config import config_from_argv

    for search in script.SEARCHES:
        for (label, seed), (out, argv) in script.search_jobs(search, [0, 1], "results/select").items():
            cfg = config_from_argv(argv)
            assert cfg.seed == seed and cfg.out == out and out.endswith(f"seed{seed}")


def test_byol_gets_as_many_configurations_as_contrawarps_search(script):
    assert len(script.SEARCHES["byol"]) == len(script.SEARCHES["contrawarp"])
    assert {m for _, m, _ in script.SEARCHES["byol"]} == {"byol"}


def test_the_same_settings_share_one_run_and_different_ones_do_not(script):
    levers = script.search_jobs("levers", [0], "r")
    recipe = script.search_jobs("contrawarp", [0], "r")
    assert levers[("default step", 0)][0] == recipe[("mild views, wide warps", 0)][0]
    folders = [out for out, _ in levers.values()]
    assert len(set(folders)) == len(folders)
    assert script.protocol.run_key(levers[("default step", 0)][1]) != script.protocol.run_key(
        levers[("detached negatives", 0)][1])


def test_table_marks_each_methods_best(script):
    search = "byol"
    labels = [label for label, _, _ in script.SEARCHES[search]]
    results = {(label, 0): 15.0 + i for i, label in enumerate(labels)}
    summaries = {(label, 0): {"seconds": 60.0} for label in labels}
    lines = script.table(search, [0], results, summaries)
    marked = [line for line in lines if line.endswith(" *")]
    assert len(marked) == 1 and marked[0].startswith(labels[-1])


@pytest.mark.parametrize("argv, match", [
    (["--search", "byol", "--only", "no such thing"], "--only: 'no such thing' is not a configuration"),
    (["--search", "byol", "--jobs", "0"], "--jobs: expected >= 1"),
    (["--search", "swav"], "invalid choice"),
    (["--search", "byol", "--image-size", "4"], "--image-size: expected >= 16, got 4"),
])
def test_bad_values(script, monkeypatch, capsys, argv, match):
    monkeypatch.setattr(script.protocol, "pretrain_runs", lambda *a, **k: pytest.fail("pretraining started"))
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_another_scale_reaches_every_run_and_a_configurations_own_arch_wins(script):
    from cwarp.train.config import config_from_argv

    jobs = script.search_jobs("levers", [0], "r", over={"image_size": 48}, arch="resnet18-small")
    configs = {label: config_from_argv(argv) for (label, _), (_, argv) in jobs.items()}
    assert {c.data.image_size for c in configs.values()} == {48}
    assert configs["default step"].arch == "resnet18-small"
    assert configs["plain stem (convnet-small)"].arch == "convnet-small"
    default = script.search_jobs("levers", [0], "r")
    from cwarp.apps import demo

    assert config_from_argv(default[("default step", 0)][1]).arch == demo.DEMO_RECIPE["arch"]
