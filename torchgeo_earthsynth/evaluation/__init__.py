# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiments and the benchmark: is synthetic data ready for image recognition?"""

from torchgeo_earthsynth.evaluation.benchmark import run_benchmark
from torchgeo_earthsynth.evaluation.benchmark_config import (
    BenchmarkConfig,
    GeneratorSpec,
    load_benchmark_config,
)
from torchgeo_earthsynth.evaluation.benchmark_report import (
    COLUMNS,
    BenchmarkResult,
    BenchmarkRow,
    plot_classifier_curves,
    random_features,
    write_benchmark,
)
from torchgeo_earthsynth.evaluation.benchmark_verdict import compare, verdict
from torchgeo_earthsynth.evaluation.cli import main  # earthsynth evaluate
from torchgeo_earthsynth.evaluation.config import (
    ARMS,
    DEFAULT_DATA,
    DEFAULT_METRICS,
    DEFAULT_MODELS,
    DEFAULT_TRAINER,
    RESERVED_TRAINER_ARGS,
    TASKS,
    Arm,
    ExperimentConfig,
    TaskName,
    load_config,
)
from torchgeo_earthsynth.evaluation.data import (
    SyntheticTrainSet,
)
from torchgeo_earthsynth.evaluation.data_efficiency import (
    BudgetRow,
    DataEfficiencyResult,
    budget_label,
    interval95,
    plot_data_efficiency,
    run_data_efficiency,
    write_data_efficiency,
)
from torchgeo_earthsynth.evaluation.harness import (
    ArmSummary,
    ExperimentResult,
    PresentClassIoU,
    RunResult,
    learning_curve,
    plot_learning_curves,
    plot_summary,
    run_experiment,
    summarize,
    write_report,
)

__all__ = (
    'ARMS',
    'COLUMNS',
    'DEFAULT_DATA',
    'DEFAULT_METRICS',
    'DEFAULT_MODELS',
    'DEFAULT_TRAINER',
    'RESERVED_TRAINER_ARGS',
    'TASKS',
    'Arm',
    'ArmSummary',
    'BenchmarkConfig',
    'BenchmarkResult',
    'BenchmarkRow',
    'BudgetRow',
    'DataEfficiencyResult',
    'ExperimentConfig',
    'ExperimentResult',
    'GeneratorSpec',
    'PresentClassIoU',
    'RunResult',
    'SyntheticTrainSet',
    'TaskName',
    'budget_label',
    'compare',
    'interval95',
    'learning_curve',
    'load_benchmark_config',
    'load_config',
    'main',
    'plot_classifier_curves',
    'plot_data_efficiency',
    'plot_learning_curves',
    'plot_summary',
    'random_features',
    'run_benchmark',
    'run_data_efficiency',
    'run_experiment',
    'summarize',
    'verdict',
    'write_benchmark',
    'write_data_efficiency',
    'write_report',
)
