"""Stage 3 (the original entry point): load `clean_events` into PostgreSQL `kafka_events_silver`.

    python psqlConsumer.py --help
"""

from ecomlogs.cli import entry_point

if __name__ == "__main__":
    entry_point("load")
