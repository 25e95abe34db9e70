import importlib

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.beam_job import JobOptions

JOBS = ["augment", "collect", "clean", "embed"]


def test_jobs_flags_are_never_beam_options():
    """Every job's flags are argparse flags of its own, never a ``PipelineOptions`` subclass: Beam parses every
    subclass it has imported together, so two jobs sharing ``--input`` would clash, and Beam would see our flags."""
    from apache_beam.options.pipeline_options import PipelineOptions

    for name in JOBS:
        module = importlib.import_module(f"pipelines.{name}")
        job_options = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, JobOptions)]
        assert job_options, name
        assert not [cls for cls in job_options if issubclass(cls, PipelineOptions)], name
    beam_flags = {flag for flag in PipelineOptions([]).get_all_options()}
    assert not beam_flags & {"input", "output", "stylizer", "styles"}


def test_cpu_threads_one_per_process_only_where_runners_start_many():
    from pipelines.beam_job import cpu_threads_per_process

    def threads(*args, requested=0):
        return cpu_threads_per_process(PipelineOptions(list(args)), requested)

    assert threads("--runner=FnApiRunner") == 0
    assert threads("--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2") == 1
    assert threads("--runner=DataflowRunner") == 1
    assert threads("--runner=DataflowRunner", requested=4) == 4


def test_beam_never_sees_a_jobs_own_flags(caplog):
    """The jobs' flags are parsed by their own parser; Beam gets the rest and has nothing to warn about."""
    from pipelines import augment, clean, embed
    from pipelines.beam_job import parse_job_args

    argv = {
        augment: ["--input=in", "--output=out", "--stylizer=s.safetensors", "--batch-size=2", "--cpu-threads=1"],
        clean: ["--input", "in", "--output", "out", "--min-words=2", "--num-shards=3"],
        embed: ["--input=in", "--output=out", "--model=m", "--image-size=32"],
    }
    for module, flags in argv.items():
        opts, options = parse_job_args(module.JOB, [*flags, "--direct_num_workers=2", "--runner", "FnApiRunner"])
        with caplog.at_level("WARNING"):
            every = options.get_all_options(display_warnings=True)
        assert every["direct_num_workers"] == 2 and every["runner"] == "FnApiRunner" and opts.output == "out"
        assert not [r for r in caplog.records if "Unparseable" in r.getMessage()], module.__name__


def test_a_flag_nobody_knows_is_a_usage_error_not_a_warning(capsys):
    """Beam only warns about unknown flags and runs on: a typo of a job flag would silently run with the default."""
    from pipelines import augment, clean
    from pipelines.beam_job import parse_job_args
    from pipelines.cli import run_main

    for argv, expected in [
        (["--stlyes=all"], "unrecognized arguments: --stlyes=all (neither this job's nor Beam's); did you mean"),
        (["--nmu_workers=3", "--preserve-color"], "unrecognized arguments: --nmu_workers=3 --preserve-color"),
        (["photos/"], "unrecognized arguments: photos/ (neither"),  # a path without its flag
        (["--direct_num_workers=two"], "argument --direct_num_workers: invalid int value: 'two'"),
    ]:
        assert run_main(augment.run, ["--input=in", "--output=out", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err
        assert ("did you mean --styles?" in err) == (argv == ["--stlyes=all"])
    # a mistyped required flag: the missing flag and the typo, in one line
    from pipelines import embed

    assert run_main(embed.run, ["--input=in", "--output=out", "--modle=m", "--num_workers=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the following arguments are required: --model")
    assert err.rstrip().endswith("unrecognized: --modle (did you mean --model?)")
    # Beam's own flags, with values in either form, are not unknown
    opts, options = parse_job_args(
        clean.JOB,
        ["--input=in", "--output=out", "--experiments", "a", "--temp_location=gs://b/t", "--num_workers", "3"],
    )
    assert options.get_all_options()["num_workers"] == 3 and opts.input == "in"


def test_bad_flag_values_are_one_error_line(capsys):
    from pipelines import embed
    from pipelines.cli import run_main

    assert run_main(embed.run, ["--input=in", "--output=out", "--model=m", "--batch-size=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --batch-size: must be from 1 to 1024, got 0") and err.count("\n") == 1


def test_every_job_declares_the_flags_the_launcher_reads(monkeypatch):
    """The launcher reads a job's input paths, device and torch threads by the names its BeamJob declares, never
    by guessing a flag name; each declared name is a flag of that job."""
    from pipelines import augment, clean, collect, embed
    from pipelines.beam_job import parse_job_args

    required = {"clean": ["--input=i", "--output=o"], "embed": ["--input=i", "--output=o", "--model=m"]}
    jobs = {"augment": augment.JOB, "clean": clean.JOB, "embed": embed.JOB}
    jobs["collect"] = collect_job = _collect_job(collect, monkeypatch)
    declared = {}
    for name, job in jobs.items():
        opts, _ = parse_job_args(job, required.get(name, []))
        names = [*job.reads, *(flag for flag in (job.device, job.cpu_threads) if flag)]
        assert set(names) <= set(vars(opts)), (name, set(names) - set(vars(opts)))
        declared[name] = (job.reads, job.device, job.cpu_threads)
    assert declared["augment"] == (("input", "style_images"), "device", "cpu_threads")
    assert declared["embed"] == (("input",), "device", "cpu_threads")
    assert declared["collect"] == (("from_dir",), None, None) and collect_job.name == "collect"


def _collect_job(collect, monkeypatch):
    """collect builds its BeamJob inside ``run`` (its prepare step closes over the Instagram factory)."""
    captured = {}
    monkeypatch.setattr(collect, "run_beam_job", lambda job, argv, test_pipeline: captured.setdefault("job", job))
    collect.run([])
    return captured["job"]
