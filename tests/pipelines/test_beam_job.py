import importlib

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.beam_job import JobOptions

JOBS = ["augment", "collect", "clean", "embed"]


def test_all_jobs_import_side_by_side_and_beam_still_parses():
    """Beam parses every direct PipelineOptions subclass together: jobs sharing --input must not clash."""
    modules = [importlib.import_module(f"pipelines.{name}") for name in JOBS]
    for module in modules:
        job_options = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, JobOptions)]
        assert job_options and all(JobOptions in cls.__mro__[1:] for cls in job_options if cls is not JobOptions)
    options = PipelineOptions(["--runner=FnApiRunner", "--input=x", "--output=y"])
    assert options.get_all_options()["runner"] == "FnApiRunner"


def test_cpu_threads_one_per_process_only_where_runners_start_many():
    from pipelines.beam_job import cpu_threads_per_process

    def threads(*args, requested=0):
        return cpu_threads_per_process(PipelineOptions(list(args)), requested)

    assert threads("--runner=FnApiRunner") == 0
    assert threads("--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2") == 1
    assert threads("--runner=DataflowRunner") == 1
    assert threads("--runner=DataflowRunner", requested=4) == 4
