"""An offline WordPiece tokenizer for the tiny random-weight models.

Tiny models have no pretrained tokenizer to download, so one is made here from a fixed word list:
BERT's special tokens, the words of medical VQA questions and answers, and every letter and digit
(plus their ``##`` continuations), so that any English text tokenizes without ``[UNK]``.
The vocabulary is fixed by this file, so a tokenizer made twice is the same tokenizer.
"""

from __future__ import annotations

import string

from transformers import BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]

# Frequent words of radiology VQA (VQA-RAD, SLAKE) and reports, and of the demo set.
WORDS = """
a an the is are was were be been this that these those there here it its of in on at to from with
without by for and or not no yes what which where when how many much does do did can could has have
had show shows shown seen see image images picture scan scans study view plane taken used type kind
modality ct mri xray x ray ultrasound pet contrast t1 t2 flair weighted axial coronal sagittal
pa ap lateral organ organs chest lung lungs left right upper lower middle side sides both bilateral
head brain skull abdomen abdominal kidney kidneys liver spleen heart cardiac colon bowel bladder
pelvis spine bone bones rib ribs neck face eye stomach pancreas gallbladder aorta vessel trachea
lesion lesions mass masses nodule nodules tumor cyst fracture fluid effusion pneumothorax edema
opacity opacities consolidation infiltrate abnormal abnormality abnormalities normal large small
enlarged size shape bright dark dense hyperdense hypodense hyperintense hypointense enhancing
present absent located location position count number one two three four five zero seen visible
findings finding impression report patient there's evidence acute chronic mild moderate severe
disease diagnosis most likely cause sign signs air free wall cavity structure structures
""".split()

CHARS = list(string.ascii_lowercase + string.digits)
PUNCT = list("?.,;:!'\"-()/%")


def build_vocab() -> dict[str, int]:
    """The fixed vocabulary: special tokens, punctuation, characters, continuations, words."""
    tokens: list[str] = []
    for tok in SPECIAL_TOKENS + PUNCT + CHARS + ["##" + c for c in CHARS] + WORDS:
        if tok not in tokens:
            tokens.append(tok)
    return {tok: i for i, tok in enumerate(tokens)}


def build_offline_tokenizer(model_max_length: int = 64) -> BertTokenizer:
    """A BLIP-style BERT tokenizer (``[DEC]`` as BOS, ``[ENC]`` extra) made without any download."""
    return BertTokenizer(
        vocab=build_vocab(),
        do_lower_case=True,
        bos_token="[DEC]",
        additional_special_tokens=["[ENC]"],
        model_max_length=model_max_length,
    )


# --- a Mistral-style tokenizer for the tiny LLaVA ---------------------------------------------

# LLaVA-Med v1.5 (Mistral-7B-Instruct) prompt format: "[INST] <image>\nQUESTION [/INST] ANSWER</s>".
# The BOS token comes from the tokenizer, as with the real (SentencePiece) Mistral tokenizer.
MISTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "[INST] "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    " [/INST]"
    "{% elif message['role'] == 'assistant' %}"
    " {{ message['content'][0]['text'] }}</s>"
    "{% endif %}"
    "{% endfor %}"
)
LLAMA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama / Mistral
LLAVA_EXTRA_TOKENS = ["<image>", "<pad>"]        # appended last, as the llava-hf conversion does


def build_offline_llama_tokenizer(model_max_length: int = 512):
    """A Llama/Mistral-style fast tokenizer (``<s>``, ``</s>``, ``<unk>``, ``<image>``, ``<pad>``) with
    the Mistral chat template, built in memory from the fixed word list (WordPiece underneath)."""
    from tokenizers import AddedToken

    tokenizer = build_offline_chat_tokenizer(
        LLAMA_SPECIAL_TOKENS, LLAVA_EXTRA_TOKENS, bos="<s>", eos="</s>", unk="<unk>", pad="<pad>",
        named={"image_token": "<image>"}, chat_template=MISTRAL_CHAT_TEMPLATE, model_max_length=model_max_length,
    )
    # ordinary (non-special) tokens, kept whole and in upper case
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in ("[INST]", "[/INST]")])
    return tokenizer


def build_offline_chat_tokenizer(
    first: list[str], last: list[str], *, eos: str, pad: str, unk: str, bos: str | None = None,
    named: dict[str, str] | None = None, chat_template: str | None = None, model_max_length: int = 512,
):
    """A fast tokenizer over the fixed word list (WordPiece underneath), built in memory: the ``first``
    special tokens take ids 0, 1, ..., the ``last`` ones follow the words. ``bos`` (if any) starts every
    text; ``named`` are the family's named special tokens (``image_token``, ``boi_token``, ...), which
    its processor reads from the tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [t for t in build_vocab() if t not in SPECIAL_TOKENS] + ["[", "]"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(first + words + last))}
    backend = Tokenizer(models.WordPiece(vocab, unk_token=unk, continuing_subword_prefix="##"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token=pad,
        extra_special_tokens=dict(named or {}),
        model_max_length=model_max_length,
        chat_template=chat_template,
    )
    # every other special token of the family (turn markers, ...) kept whole, dropped when decoding
    others = [t for t in first + last if t not in tokenizer.all_special_tokens]
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, normalized=False, special=True) for t in others]})
    return tokenizer
