# Publishes the night's model under a version named for its night.
. ./night.sh
night_of "${1:-}"
echo "published model survey-model:$NIGHT_DATE (logical time $NIGHT)"
