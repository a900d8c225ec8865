# A plain trigger: one shell command per line, run in order; the job stops at the first
# line that fails. Blank lines and lines starting with # are ignored.
echo "extracting"
test -d /tmp
