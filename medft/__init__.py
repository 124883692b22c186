"""medft: parameter-efficient fine-tuning experiments for medical vision-language models.

    medft train +tune=layernorm          # train only the normalization layers
    medft train -m tune=layernorm,full   # sweep tune modes
"""

__version__ = "0.1.0"
