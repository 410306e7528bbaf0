package pipeline

import (
	"fmt"
	"math"
	"time"

	"github.com/runops/runops/internal/jobs"
)

// Every sentence the pipeline gives a person, in one place: a job's error
// column (docs/lifecycle.md, errors) and the reasons in metadata.frames.

// The recording refused.
const (
	msgUnreadable = "The file could not be read as a video; it may be damaged, incomplete or not a video at all. Please upload the screen recording again (MP4, MOV or WebM)."
	msgNoVideo    = "The file has no picture (it may be audio only). Please upload a screen recording."
	msgDamaged    = "The video could not be converted; it may be damaged or incomplete. Please upload the recording again."
	msgNoUpload   = "The uploaded video is no longer in storage. Please upload it again."
)

func msgVideoTooLong(seconds float64) string {
	return fmt.Sprintf("The video is %s long; the limit is %s. Please upload a shorter recording.",
		minutes(seconds), minutes(jobs.MaxDuration.Seconds()))
}

// msgVideoOverLimit: a recording whose container did not say its length,
// or said less, turned out longer than the limit.
func msgVideoOverLimit() string {
	return fmt.Sprintf("The video is longer than %s (the limit). Please upload a shorter recording.",
		minutes(jobs.MaxDuration.Seconds()))
}

func msgPictureSize(width, height int) string {
	return fmt.Sprintf("The video's picture size (%d×%d pixels) is not supported; please record at a usual screen resolution.",
		width, height)
}

func msgConvertTooSlow(limit time.Duration) string {
	return fmt.Sprintf("Converting the video took longer than %s; please upload a shorter recording or try again later.",
		minutes(limit.Seconds()))
}

// The worker's disk.

// tooBig is the sentence for a recording the work directory can never hold.
func tooBig(need, size uint64) string {
	return fmt.Sprintf("This recording needs about %s of working space, more than the worker's disk holds (%s): "+
		"please upload a shorter or smaller recording, or ask your administrator for a larger disk.", gigabytes(need), gigabytes(size))
}

func msgNoRoom(need uint64) string {
	return fmt.Sprintf("The worker's disk has not had room for this recording (about %s of working space) "+
		"%d times in a row; please try again later, or ask your administrator for more disk space.",
		gigabytes(need), maxDiskHandBacks)
}

// The services the job waits for.
const (
	msgStorageDown = "File storage could not be reached for too long; please try again in a few minutes."
	msgStorageKey  = "File storage refused our credentials; the operators have been told. Please try again later."
	msgBadKey      = "The AI service refused our credentials; the operators have been told. Please try again later."
	msgSafety      = "The AI service declined to process this video (its safety filter blocked it). If it shows an ordinary work procedure, please contact support."
	msgFileFailed  = "The AI service could not process the video file. Please upload the recording again."
	msgFileSlow    = "The AI service took too long to prepare the video; please try again later."
	msgQuota       = "Gemini quota exhausted; try again later."
	msgAIDown      = "The AI service is unavailable right now; please try again in a few minutes."
	msgAIRefused   = "The AI service refused to process this recording; try a shorter one, and contact support if it keeps happening."
	msgInvalid     = "The AI could not describe this video as a valid SOP after %d tries. Please try again, or record the procedure again with more narration."
	msgTooLong     = "The procedure in this video is too long to describe in one SOP; please split the recording into shorter parts."
)

// Why a shown step has no screenshot, for metadata.frames.missing.
const (
	whyBadID            = "the step's id cannot name a file (letters, digits, - and _ only)"
	whyTooMany          = "only the first 100 shown steps get a screenshot"
	reasonRecordingGone = "the recording is no longer in storage"
	whyNoFrame          = "the video has no picture at "
	whyNotTaken         = "the picture could not be taken at "
)

// whyTooLong is why a step has no screenshot when taking and storing them
// outlasted Config.FramesTimeout.
func whyTooLong(limit time.Duration) string {
	return "taking and storing the screenshots took longer than " + minutes(limit.Seconds())
}

// minutes says a duration as a person would: "24 minutes", "20 minutes 30 seconds".
func minutes(seconds float64) string {
	s := int(math.Round(seconds))
	m, rest := s/60, s%60
	unit := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	switch {
	case m == 0:
		return unit(rest, "second")
	case rest == 0:
		return unit(m, "minute")
	}
	return unit(m, "minute") + " " + unit(rest, "second")
}

func gigabytes(n uint64) string {
	return fmt.Sprintf("%.1f GB", float64(n)/1e9)
}
