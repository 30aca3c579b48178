"""Mean pooling for BERT-family sequence classifiers (``model.pooling: mean``).

``BertForSequenceClassification`` classifies the [CLS] token's last hidden state after a dense + tanh
"pooler". Sentence-transformers models, the packaged MiniLM among them, were pre-trained to be used
through the *mean* of their last hidden states over the text's tokens, and their pooler was never
trained. :class:`MeanPoolingClassifier` is that: the same BERT encoder, the mask-weighted mean of its
last hidden states, dropout and a linear head.

It is a transformers model of its own model type (``tuneops-bert-mean``), registered with the Auto
classes when this module is imported (``tuneops.families.classification.predictor.Classifier``, the one prediction
path, imports
it), so an exported folder loads with ``AutoModelForSequenceClassification`` there, and a loader
without tuneops fails with "unrecognised model type" instead of silently pooling the wrong way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "tuneops-bert-mean"


class MeanPoolingConfig(BertConfig):
    """A BERT configuration whose model type selects :class:`MeanPoolingClassifier`."""

    model_type = MODEL_TYPE


class MeanPoolingClassifier(BertPreTrainedModel):
    """BERT encoder, mean of the last hidden states over the attention mask, dropout, linear head."""

    config_class = MeanPoolingConfig

    def __init__(self, config: MeanPoolingConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        rate = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(rate)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                position_ids: Any = None, inputs_embeds: Any = None, labels: Any = None,
                past_key_values: Any = None, **kwargs: Any) -> SequenceClassifierOutput:
        # ``past_key_values`` is named so that PEFT's prefix tuning passes its prefix here: without the name in
        # this signature it calls the encoder itself and classifies the encoder's pooler output, which this
        # model does not have.
        kwargs.pop("return_dict", None)
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        hidden = out.last_hidden_state
        if attention_mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        else:
            # prefix tuning prepends its virtual tokens to the mask only: the hidden states are the real tokens'
            mask = attention_mask[:, -hidden.shape[1]:].to(hidden.dtype)
        mask = mask.unsqueeze(-1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


AutoConfig.register(MODEL_TYPE, MeanPoolingConfig, exist_ok=True)
AutoModelForSequenceClassification.register(MeanPoolingConfig, MeanPoolingClassifier, exist_ok=True)


def classifier_class(pooling: str) -> Any:
    """The class that loads a base model as a sequence classifier pooled by ``pooling`` ('cls' or 'mean').

    Whether the base can be mean-pooled is checked before a run starts (``tuneops.training.base_models.preflight``)."""
    return MeanPoolingClassifier if pooling == "mean" else AutoModelForSequenceClassification
