package report

import (
	"context"
	"fmt"

	"github.com/tunnelplane/tunnelplane/report/render"
)

// TextOpener opens the personal data sealed inside text (a *pii.Keyring): the plaintext,
// "[erased]" once its subject was erased.
type TextOpener interface {
	OpenText(ctx context.Context, text string) (string, error)
}

// openDocument replaces sealed values in the document's text (table cells, facts, paragraphs)
// before it is rendered: the read model keeps them sealed, so an erasure needs no rewrite of it.
func openDocument(ctx context.Context, doc *render.Document, o TextOpener) error {
	if o == nil {
		return nil
	}
	var firstErr error
	open := func(c render.Cell) render.Cell {
		if c.Kind() != render.Text {
			return c
		}
		s, err := o.OpenText(ctx, c.String())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return c
		}
		return render.Str(s)
	}
	openFacts := func(fs []render.Fact) {
		for i := range fs {
			fs[i].Value = open(fs[i].Value)
		}
	}
	openFacts(doc.Meta)
	for si := range doc.Sections {
		for bi, b := range doc.Sections[si].Blocks {
			switch b := b.(type) {
			case *render.Table:
				for ri := range b.Rows {
					for ci := range b.Rows[ri].Cells {
						b.Rows[ri].Cells[ci] = open(b.Rows[ri].Cells[ci])
					}
				}
			case render.Facts:
				openFacts(b.Items)
			case render.Paragraph:
				doc.Sections[si].Blocks[bi] = render.Paragraph{Text: open(render.Str(b.Text)).String()}
			}
		}
	}
	if firstErr != nil {
		return fmt.Errorf("report: open personal data: %w", firstErr)
	}
	return nil
}
