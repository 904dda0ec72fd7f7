"""Stage 1 (the original entry point): generate e-commerce events into Kafka `raw_events`.

    python producer.py --help
"""

from ecomlogs.cli import entry_point

if __name__ == "__main__":
    entry_point("produce")
