"""What of a clinic's data card crosses to the coordinator, and under which record name.

Kept apart from radfed.data (which imports torch and pydicom) so that the server side
(strategies, recorder) can read cards without loading the DICOM pipeline.
"""

# The ConfigRecord of a clinic's first train reply of a run that holds shared_card() as JSON.
DATA_CARD_RECORD = "data-card"
# The keys of ClinicData.shared_card(): all a coordinator keeps of a clinic's data card.
SHARED_CARD_KEYS = (
    "labels",
    "train",
    "val",
    "rejected",
    "rejected_total",
    "modalities",
    "manufacturers",
    "sizes",
    "transfer_syntaxes",
    "filtered",
    "unit",
)
