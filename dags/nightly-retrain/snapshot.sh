# Takes the snapshot of survey answers collected up to the night's slot.
. ./night.sh
night_of "${1:-}"
rows="${2:?usage: snapshot.sh LOGICAL_TIME ROWS}"
echo "snapshot of $rows survey answers up to $NIGHT (run $VISHWA_RUN_ID)"
echo "snapshot id survey-$NIGHT_DATE"
