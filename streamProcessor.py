"""Stage 2 (the original entry point): validate `raw_events` into `clean_events` and a dead-letter topic.

    python streamProcessor.py --help
"""

from ecomlogs.cli import entry_point

if __name__ == "__main__":
    entry_point("process")
