"""The classification vocabulary every provider answers in (ACMG/AMP terms)."""

# Most severe first: the aggregator's merged verdict takes the first that any provider gave.
CLASSIFICATIONS = ("pathogenic", "likely_pathogenic", "uncertain", "likely_benign", "benign")
