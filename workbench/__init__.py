"""zh-workbench: Chinese domain-adaptation and desensitised-data pretraining workbench.

Stages talk through directories with a ``manifest.json`` (see ``workbench.manifest``);
``workbench <stage> --config FILE [key=value ...]`` runs one (see ``workbench.cli``).
"""

__version__ = "0.1.0"
