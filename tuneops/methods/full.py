"""Full fine-tuning: every weight of the base model is trained."""

from tuneops.methods import Method, register

register(Method(name="full", summary="update every weight of the base model", settings=None,
                prepare=lambda model, settings, task_type: model))
