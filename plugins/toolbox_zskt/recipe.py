"""Recipe schema of ZSKT. Defaults are the paper's CIFAR-10 settings; recipes/zskt/ holds the rest."""

from typing import Literal

from toolbox.recipes import (
    ArchName,
    ArchSection,
    BatchSize,
    Count,
    DataSource,
    Float,
    Int,
    Interval,
    LearningRate,
    LossWeight,
    RecipeBase,
    Section,
    Temperature,
)
from toolbox.teachers import TeacherSection as Teacher


class Student(ArchSection):
    arch: ArchName = "wrn-16-1"
    kwargs: dict = {}


class Data(DataSource):
    # only the test split is read (evaluation); the student never sees a training image
    pass


class GeneratorSection(Section):
    z_dim: Int(1, 100_000) = 100


class Optim(Section):
    student_lr: LearningRate = 2e-3
    generator_lr: LearningRate = 1e-3  # the paper states 2e-3 for both; the released code uses 1e-3 here
    grad_clip: Float(gt=0, le=1e6) = 5.0  # max grad norm, both networks; the learning rates follow a cosine to 0, stepped per iteration


class Loss(Section):
    beta: LossWeight = 250.0  # per attention layer, tuned to mean-reduced AT and KL
    temperature: Temperature = 1.0


class ZSKTRecipe(RecipeBase):
    method: Literal["zskt"] = "zskt"
    teacher: Teacher = Teacher()
    student: Student = Student()
    data: Data = Data()
    generator: GeneratorSection = GeneratorSection()
    optim: Optim = Optim()
    loss: Loss = Loss()
    iterations: Count = 80_000
    batch_size: BatchSize = 128
    generator_steps: Count = 1
    student_steps: Count = 10
    eval_every: Interval = 0  # iterations between test evaluations; 0 = every 1% of training
    sample_every: Interval = 0  # iterations between generator-sample PNGs; 0 = every 10% of training
