"""Full fine-tuning: every weight of the base model is trained."""

from tuneops.methods import Method, register

register(Method(name="full", prepare=lambda model, cfg: model, export=lambda model: model))
