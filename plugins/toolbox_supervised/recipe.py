"""Recipe schema of the supervised method: classifier training, optionally on a condensed set."""

from typing import Literal

from pydantic import model_validator

from toolbox.classifier_recipe import ClassifierData, ClassifierRecipe
from toolbox.errors import UsageError


class Data(ClassifierData):
    synthetic: str | None = None  # train on a condensed set (run dir or hf-hub:) instead of the real train split

    @model_validator(mode="after")
    def _one_dataset(self):
        """A condensed set on disk must be of data.dataset: the run records (and is named by) that
        dataset, so training on digits while recording mnist would be a silent lie. Checked before
        the run directory exists; a Hub set is checked when it is downloaded (training.py)."""
        if not self.synthetic or self.synthetic.startswith("hf-hub:"):
            return self
        from toolbox.artifacts import CONDENSED_FORMAT, read_config, resolve_source

        config = read_config(resolve_source(self.synthetic).path)
        if config.get("format") != CONDENSED_FORMAT:
            raise UsageError(f"data.synthetic (--data) {self.synthetic} is not a condensed set (its config.json format is "
                             f"'{config.get('format')}'); pass a folder written by `toolbox condense`")
        check_dataset(self.synthetic, config.get("dataset"), self.dataset)
        return self


def check_dataset(ref, condensed_of, dataset) -> None:
    if condensed_of != dataset:
        raise UsageError(f"data.synthetic (--data) {ref} is a condensed set of '{condensed_of}' but data.dataset "
                         f"(--dataset) is '{dataset}'; pass --dataset {condensed_of} (or omit --data)")


class SupervisedRecipe(ClassifierRecipe):
    method: Literal["supervised"] = "supervised"
    data: Data = Data()
