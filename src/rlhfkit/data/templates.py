"""How records become text: the prompt the model reads and the response it learns to write.

**Prompt/response records** (``{"prompt", "response"}``, string preferences, ``{"prompt"}``) are a
raw completion format. The prompt is used verbatim and the response continues it verbatim:
no separator, role marker or special token is added. Put your own separator in the data
(``"Q: 2+2?\\nA:"`` followed by ``" 4"``). The bundled default task uses this form.

**Chat records** (``{"messages": [...]}``, and conversational preferences, whose chosen and
rejected replies are each rendered as the assistant's response to the prompt messages):

* If the tokenizer has a chat template (``tokenizer.chat_template`` is set), the prompt is
  ``tokenizer.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)``.
  The response is what the template writes after that prompt when it renders the whole
  conversation, such as ``"4<|im_end|>\\n"``, so the model also learns the template's
  end-of-turn marker. If that text ends with the tokenizer's EOS token, that EOS is removed,
  because tokenization appends exactly one EOS to every response. If the template renders
  the conversation in a way that does not start with the prompt text, the response falls
  back to the assistant's content.
* Otherwise rlhfkit uses a plain template. Each message becomes ``"<Role>: <content>\\n"``
  (``System``, ``User``, ``Assistant``), followed by ``"Assistant: "`` as the generation
  prompt. The response is the assistant's content verbatim::

      System: Be brief.
      User: 2+2?
      Assistant: 4<EOS>

**Every assistant turn is learned** in a multi-turn SFT record, not only the last: the text the
template writes for an earlier assistant turn (content and end-of-turn marker, e.g.
``"4<|im_end|>\n"``; with the plain template the content only) is marked as learned inside the
prompt (`render_prompt_segments`). Each turn's span is found by rendering the conversation up to
it; a template whose shorter renderings are not prefixes of the longer ones (some templates drop
earlier turns' reasoning, say) falls back to learning the last turn only.

Special tokens that a template writes as text, such as ``<s>``, are tokenized as special
tokens later. Tokenization never adds any of its own (``add_special_tokens=False``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhfkit.data.records import InstructionExample, PreferenceExample, PromptExample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_GENERATION_PROMPT = "Assistant: "

Example = InstructionExample | PreferenceExample | PromptExample


def render_plain(messages: list[dict]) -> str:
    """The fallback chat format: one ``"<Role>: <content>\\n"`` line per message."""
    return "".join(f"{PLAIN_ROLE_NAMES[m['role']]}: {m['content']}\n" for m in messages)


def _prompt_messages(example: Example) -> list[dict] | None:
    if example.messages is None:
        return None
    return example.messages[:-1] if isinstance(example, InstructionExample) else example.messages


def render_prompt(tokenizer: PreTrainedTokenizerBase, example: Example) -> str:
    """The prompt text of any record: verbatim, through the chat template, or the plain template."""
    messages = _prompt_messages(example)
    if messages is None:
        return example.prompt
    return _render_messages(tokenizer, messages, generation_prompt=True)


def render_chat_response(tokenizer: PreTrainedTokenizerBase, example: InstructionExample) -> str:
    """The response text (without the appended EOS) of an instruction record, in either form."""
    if example.messages is None or not tokenizer.chat_template:
        return example.response
    prompt = render_prompt(tokenizer, example)
    full = tokenizer.apply_chat_template(example.messages, tokenize=False)
    if not full.startswith(prompt):
        return example.response
    tail = full[len(prompt):]
    eos = tokenizer.eos_token
    if eos and tail.rstrip().endswith(eos):
        tail = tail.rstrip()[: -len(eos)]
    return tail


def render_preference_responses(tokenizer: PreTrainedTokenizerBase, example: PreferenceExample) -> tuple[str, str]:
    """(chosen, rejected) texts, each without the appended EOS: verbatim for the string form; for the
    chat form what the template writes for that assistant reply, as for an SFT response."""
    if example.messages is None:
        return example.chosen, example.rejected
    return tuple(  # type: ignore[return-value]
        render_chat_response(tokenizer, InstructionExample(
            prompt=None, response=reply, messages=[*example.messages, {"role": "assistant", "content": reply}]))
        for reply in (example.chosen, example.rejected))


def _render_messages(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return render_plain(messages) + (PLAIN_GENERATION_PROMPT if generation_prompt else "")


def render_prompt_segments(tokenizer: PreTrainedTokenizerBase, example: InstructionExample) -> list[tuple[str, bool]]:
    """The prompt of an SFT record as ``(text, learned)`` pieces whose texts join to `render_prompt`:
    earlier assistant turns are learned, everything else is context."""
    prompt = render_prompt(tokenizer, example)
    messages = example.messages
    if messages is None:
        return [(prompt, False)]
    segments: list[tuple[str, bool]] = []
    done = 0  # characters of `prompt` already assigned to a segment
    for i, message in enumerate(messages[:-1]):
        if message["role"] != "assistant":
            continue
        before = _render_messages(tokenizer, messages[:i], generation_prompt=True)
        after = _render_messages(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (after.startswith(before) and prompt.startswith(after) and len(before) >= done):
            return [(prompt, False)]  # renderings are not nested: learn the last turn only
        end = len(after) if tokenizer.chat_template else len(before) + len(message["content"])
        segments += [(prompt[done:len(before)], False), (prompt[len(before):end], True)]
        done = end
    segments.append((prompt[done:], False))
    return [(text, learned) for text, learned in segments if text]
