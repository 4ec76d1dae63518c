"""The classification vocabulary every provider answers in (ACMG/AMP 2015 terms, Richards et al.)."""

# Most severe first: the aggregator's merged verdict takes the first that any provider gave.
# not_classified (nothing could be assessed) is last, so any provider's assessment wins over it.
CLASSIFICATIONS = (
    "pathogenic",
    "likely_pathogenic",
    "uncertain_significance",
    "likely_benign",
    "benign",
    "not_classified",
)
