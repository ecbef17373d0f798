package demo

import (
	"crypto/sha256"
	"encoding/binary"
)

// answers are what the demo model says: plain sentences, so a demo reads like a model answering.
var answers = []string{
	"Sunlight is scattered by the molecules of the air, and blue light, with its shorter wavelength, is scattered far more than red. Wherever you look away from the sun, that scattered blue light reaches your eyes, so the sky looks blue.",
	"A tunnel agent dials out from your machine, so nothing has to listen on your network. The node it reaches carries each caller's request to your local service over SSH, and the control plane records who connected and when.",
	"Start small: write down what the program must do, make the simplest version that does it, and measure before you optimise. Most slow programs spend their time in a few places that a profiler finds in minutes.",
	"Here is a short plan. First, reproduce the problem with the smallest input you can. Second, read the error message slowly, all of it. Third, change one thing at a time and keep notes of what you tried.",
	"An append-only log with a hash chain makes tampering visible: each record commits to the one before it, and a signed checkpoint commits to all of them. Anyone holding an older checkpoint can check that the log only grew.",
	"Good question. The honest answer is that it depends on what you need: fast answers favour a small model close to you, careful answers a larger one. Try both on a few of your own prompts and compare.",
	"Once upon a time a packet left a laptop, crossed a WebSocket, rode an SSH channel through a node and found the model it was looking for. The model answered one token at a time, and the packet came home.",
	"In short: yes. The longer answer is that the details matter, so test it the way it will be used, with real data, and keep the test around so the answer stays yes.",
}

// CannedAnswer is the demo model's answer to a prompt: one of a few fixed texts, the same for the
// same prompt.
func CannedAnswer(prompt string) string {
	sum := sha256.Sum256([]byte(prompt))
	return answers[binary.BigEndian.Uint64(sum[:8])%uint64(len(answers))]
}
