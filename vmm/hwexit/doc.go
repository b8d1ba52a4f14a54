// Package hwexit is the hardware layer beneath KVM's exits, and the
// learner's explanation of both layers.
//
// Every exit has two reasons. The processor's own: a VT-x basic exit reason
// on Intel (Intel SDM Vol. 3C, Appendix C "VMX Basic Exit Reasons", and
// §25.9.1 for the layout of the exit-reason field) or an SVM exit code on AMD
// (AMD64 APM Vol. 2, Appendix C "SVM Intercept Exit Codes", and §15.6
// "#VMEXIT"). And KVM's: the KVM_EXIT_* value that package exits decodes from
// the kvm_run page, given only for the exits KVM hands to user space. This
// package holds the two vendors' tables (hardware.go), maps each KVM reason
// to the hardware exit(s) that can produce it (Beneath, HWFor), says which
// hardware exits KVM keeps to itself and why (KernelHandled), and puts an
// exit into plain words for `kvmlab step`'s explain command (Explain).
//
// The tables and the explanations are one package, not two, because the
// explanations are the tables read aloud: Explain names hardware exits with
// the same name helpers and VM-instruction-error convention that Beneath
// uses, and KernelHandled is one more table over the same codes. Splitting
// them would export those internals only for the neighbour's sake.
//
// They are apart from package exits because they are not on the exit path's
// hot loop: the vCPU loop decodes every exit, but only the observatory
// (tracing, statistics, the stepper) asks what lies beneath one, and only it
// needs the trace types these answers are written in. The imports point one
// way: hwexit uses exits and trace; exits uses neither.
package hwexit
