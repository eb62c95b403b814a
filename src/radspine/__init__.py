"""radspine: grade lumbar spine degeneration on MRI (RSNA 2024 LSDC layout)."""

__version__ = "0.1.0"
