-- Who was signed in last (user id and email, never a token): the window starts offline on the
-- cached lists of that account instead of a sign-in screen, since being offline is not being
-- signed out. Cleared at sign-out.
create table last_account (
    id         integer primary key check (id = 1),
    user_id    text not null,
    email      text,
    updated_at text not null
) strict;
