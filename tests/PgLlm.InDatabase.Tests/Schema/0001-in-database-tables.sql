-- Tables the in-database worker tests declare in TestTables.cs.
CREATE TABLE items (
    id     bigint PRIMARY KEY,
    input  text NOT NULL,
    output text
);

CREATE TABLE notes (
    id      bigint PRIMARY KEY,
    body    text NOT NULL,
    summary text
);

-- A column that rejects most answers: a value that does not fit is an invalid answer.
CREATE TABLE codes (
    id    bigint PRIMARY KEY,
    input text NOT NULL,
    code  varchar(3)
);

-- Columns of every kind the generator's schemas have, for the answer cases (Data/answer-cases.json).
CREATE TYPE verdict AS ENUM ('keep', 'drop', 'needs_review');

CREATE TABLE typed_answers (
    id          bigint PRIMARY KEY,
    body        text NOT NULL,
    stars       integer NOT NULL DEFAULT 0,
    score       numeric,
    recommended boolean,
    verdict     verdict NOT NULL DEFAULT 'keep',
    mood        verdict,
    reviewed_on date,
    tags        text[],
    codes       bigint[],
    place       jsonb,
    places      jsonb,
    seen_at     timestamptz,
    opens_at    time,
    ref         uuid
);

-- A chain: the headline reads the summary another task writes (and the body the summary reads).
CREATE TABLE articles (
    id       bigint PRIMARY KEY,
    body     text NOT NULL,
    summary  text,
    headline text
);
