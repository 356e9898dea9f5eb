package ident

import (
	"testing"

	"github.com/distribution/reference"
)

func TestRepo(t *testing.T) {
	name, err := reference.WithName("library/alpine")
	if err != nil {
		t.Fatal(err)
	}
	mine := Of(name)
	if mine.Stored().Name() != "library/alpine" || mine.Name() != "library/alpine" || mine.Origin() != "" {
		t.Fatalf("the configured origin's repository is stored as %q: storage of one origin would need a migration", mine.Stored().Name())
	}
	other, err := At("registry.example.com:5000", name)
	if err != nil {
		t.Fatal(err)
	}
	if other.Stored().Name() != "registry.example.com_5000/library/alpine" || other.Name() != "library/alpine" {
		t.Fatalf("another origin's repository: stored %q, name %q", other.Stored().Name(), other.Name())
	}
	if mine.Key() == other.Key() {
		t.Fatal("two origins' repositories of one name share a key")
	}
	if _, err := At("Not A Host", name); err == nil {
		t.Fatal("an origin that cannot name storage was accepted")
	}
}
