"""ChatML chat templates (Qwen families, InternVL), with ``{% generation %}`` around assistant turns.

The text they render is the same as the published Qwen2.5-VL and Qwen3-VL templates for the message
shapes this project uses (system/user/assistant, images, videos, text). The Jinja source is written
without line breaks or whitespace control, so every newline in the output is one written on purpose.
Two additions:

- ``{% generation %}...{% endgeneration %}`` around assistant content, so
  ``apply_chat_template(..., return_assistant_tokens_mask=True)`` can mark the answer tokens.
- The Qwen3-VL template writes a *bare* ``<|video_pad|>`` for a video: the transformers 5 Qwen3-VL
  processor expands that one token into ``<t seconds><|vision_start|><|video_pad|>...<|vision_end|>``
  per frame, so wrapping it in vision start/end tokens would nest them.
"""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

_HEAD = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    # Assistant turns: text only, inside a generation block (the assistant-token mask).
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{% endgeneration %}\n"
    "{% elif message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
)
_TAIL = (
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN2_5_VL_TEMPLATE = _HEAD + "<|vision_start|><|video_pad|><|vision_end|>" + _TAIL
QWEN3_VL_TEMPLATE = _HEAD + "<|video_pad|>" + _TAIL

# The special tokens both families define, in the published order (ids follow the BPE vocabulary).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def chatml_template(image: str, video: str) -> str:
    """The ChatML template above with other image and video placeholders (e.g. InternVL's
    ``<IMG_CONTEXT>`` and ``<video>``)."""
    return _HEAD.replace(_QWEN_IMAGE, image) + video + _TAIL
