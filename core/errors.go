package core

import "errors"

// Errors returned by Step and New. Callers test them with errors.Is.
var (
	// ErrLogGap means a state whose log was cleaned past its checkpoint:
	// the instances between them are lost. It comes with ErrCorruptState.
	ErrLogGap = errors.New("core: log cleaned past the checkpoint")
	// ErrInvalidMessage means a message failed validation; it was dropped.
	ErrInvalidMessage = errors.New("core: invalid message")
	// ErrNotMember means a message came from a node outside the group.
	ErrNotMember = errors.New("core: sender is not a member")
	// ErrWrongGroup means a message was addressed to another group or node.
	ErrWrongGroup = errors.New("core: message for another group or node")
	// ErrInvalidConfig means New was given an unusable Config.
	ErrInvalidConfig = errors.New("core: invalid config")
	// ErrCorruptState means the restored state contradicts itself.
	ErrCorruptState = errors.New("core: corrupt restored state")
)
