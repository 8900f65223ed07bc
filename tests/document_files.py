"""Small real PDF, DOCX and HTML files for the tests, made on the fly (no binary fixtures)."""

from __future__ import annotations

import io

HARBOUR = (
    "The harbour authority opened a new container terminal in Brindle on 4 June. The "
    "terminal can handle 800,000 containers a year, twice as many as the old quay, and it "
    "employs 310 people."
)
DIRECTOR = "Port director Elena Marsh said the project cost $240 million and took three years."
LIGHTHOUSE = (
    "The Skerry lighthouse was built in 1871 by the engineer Thomas Vale. Its light can be "
    "seen from 22 nautical miles away."
)


def pdf_bytes(pages: list[list[str]], footer: bool = False, heading: str | None = None) -> bytes:
    """A PDF with real text: one list of paragraphs per page; ``footer``: "Page N" on each."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(False)
    for number, paragraphs in enumerate(pages, start=1):
        pdf.add_page()
        if heading and number == 1:
            pdf.set_font("Helvetica", "B", 16)
            pdf.multi_cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=12)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
        if footer:
            pdf.set_y(-20)
            pdf.cell(0, 6, f"Page {number}")
    return bytes(pdf.output())


def encrypted_pdf(data: bytes, user_password: str, algorithm: str = "AES-256") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def scanned_pdf(pages: int = 2) -> bytes:
    """Pages without a text layer, as a scanner without OCR makes them."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(595, 842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(blocks: list[tuple[str, str]], table: list[list[str]] | None = None,
               merge_last_row: bool = False) -> bytes:
    """A .docx of (style, text) paragraphs ("Title", "Heading 1", "Normal" ...), then a table."""
    import docx

    document = docx.Document()
    for style, text in blocks:
        document.add_paragraph(text, style=style)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, text in enumerate(row):
                t.cell(r, c).text = text
        if merge_last_row:
            last = len(table) - 1
            merged = t.cell(last, 0).merge(t.cell(last, len(table[0]) - 1))
            merged.text = "merged across the row"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


_WRAPPED = LIGHTHOUSE.replace(" Its", "\n   Its")  # source line breaks collapse to spaces
HTML_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Lighthouse notes</title>
<style>p {{ color: red; }}</style><script>var tracking = "do not index me";</script></head>
<body>
<header><a href="/">Home</a> <a href="/news">News</a></header>
<nav><ul><li>Menu entry one</li><li>Menu entry two</li></ul></nav>
<main><article>
<header><h1>Lighthouse   Notes</h1></header>
<p>{_WRAPPED}</p>
<div role="navigation">Skip to the comments</div>
<h2>The <em>keeper</em>'s house</h2>
<p>The keeper&rsquo;s house has <b>four</b>&nbsp;rooms<br>and a garden of 60 square metres.</p>
<ul><li>Open from May to September on weekdays and weekends.</li></ul>
<table><tr><td>Height</td><td>41 metres</td></tr></table>
<pre>  line one
    line two</pre>
<p hidden>A hidden paragraph that is not shown.</p>
</article></main>
<aside>Related: other lighthouses you may like</aside>
<footer>Copyright 2024 Coastal Press</footer>
<script>console.log("bye")</script>
</body></html>
"""


def pdf_bomb(draws: int, lines: int = 60) -> bytes:
    """A hand-written PDF of about 1 KB whose one page draws a form of ``lines`` sentences
    ``draws`` times: ``lines * draws`` passages (60,000 from 1.1 KB at 1,000 draws), the way
    the issue's 14 KB PDF made 67,960."""
    import zlib

    form = ["BT /F1 9 Tf 20 800 Td 12 TL", "(" + "Header " * 14 + "line.) Tj T*"]
    # Each sentence is shorter than the long first line, so each ends its own paragraph.
    form += [f"(Entry {i} of the harbour log notes a quiet night.) Tj T*" for i in range(lines)]
    form.append("ET")
    form_data = zlib.compress("\n".join(form).encode(), 9)
    page = zlib.compress(b"q /X0 Do Q\n" * draws, 9)

    def stream(head: bytes, data: bytes) -> bytes:
        return b"<< %s /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (
            head, len(data), data)

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X0 6 0 R >> >> >>",
        stream(b"", page),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        stream(b"/Type /XObject /Subtype /Form /BBox [0 0 612 842] "
               b"/Resources << /Font << /F1 5 0 R >> >>", form_data),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def docx_bomb(padding: int = 10_000_000) -> bytes:
    """A real .docx carrying ``padding`` zero bytes that deflate to about 1/1000 of that."""
    import zipfile

    buffer = io.BytesIO(docx_bytes([("Normal", HARBOUR)]))
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/media/padding.bin", bytes(padding))
    return buffer.getvalue()
