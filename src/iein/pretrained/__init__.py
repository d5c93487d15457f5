"""Models shipped with the package: ``<name>.safetensors`` (+ ``<name>.card.json``), loaded
by name with ``Recognizer.load(name)`` / ``iein predict --model name``."""
