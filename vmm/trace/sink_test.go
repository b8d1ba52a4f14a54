package trace

import "testing"

// recorder keeps copies of what it is given.
type recorder struct{ got []uint64 }

func (r *recorder) Record(ev *Event) { r.got = append(r.got, ev.Seq) }

func TestMulti(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	tests := []struct {
		name    string
		sinks   []Sink
		wantNil bool
		single  Sink // Multi returns this sink itself
		calls   []*recorder
	}{
		{"none", nil, true, nil, nil},
		{"only nil and Nop", []Sink{nil, Nop{}, &Nop{}}, true, nil, nil},
		{"one", []Sink{nil, a, Nop{}}, false, a, []*recorder{a}},
		{"two", []Sink{a, nil, b}, false, nil, []*recorder{a, b}},
		{"nested", []Sink{Multi(a, b), Multi(nil), b}, false, nil, []*recorder{a, b, b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.got, b.got = nil, nil
			s := Multi(tt.sinks...)
			if (s == nil) != tt.wantNil {
				t.Fatalf("Multi = %#v, nil %v", s, s == nil)
			}
			if Enabled(s) == tt.wantNil {
				t.Errorf("Enabled = %v", Enabled(s))
			}
			if s == nil {
				return
			}
			if tt.single != nil && s != tt.single {
				t.Errorf("Multi of one sink = %#v, want the sink itself", s)
			}
			ev := evHLT
			s.Record(&ev)
			want := map[*recorder]int{}
			for _, r := range tt.calls {
				want[r]++
			}
			for _, r := range []*recorder{a, b} {
				if len(r.got) != want[r] {
					t.Errorf("recorder got %v, want %d calls", r.got, want[r])
				}
			}
		})
	}
}

func TestEnabled(t *testing.T) {
	for _, tt := range []struct {
		s    Sink
		want bool
	}{
		{nil, false}, {Nop{}, false}, {&Nop{}, false}, {NewStats(), true}, {&recorder{}, true},
	} {
		if got := Enabled(tt.s); got != tt.want {
			t.Errorf("Enabled(%T) = %v", tt.s, got)
		}
	}
}
